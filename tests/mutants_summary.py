"""`make mutants`' last step: killed and surviving mutants per module of a cosmic-ray session,
then each survivor (module:line, operator, its diff) for a person to judge."""

from __future__ import annotations

import sys
from collections import Counter

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome


def main(session: str) -> int:
    """Print the figures; exit 0 (judging survivors is a person's job, see the README)."""
    killed: Counter[str] = Counter()
    survived: Counter[str] = Counter()
    survivors = []
    with use_db(session, WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            module = str(item.mutations[0].module_path)
            if result.test_outcome == TestOutcome.SURVIVED:
                survived[module] += 1
                survivors.append((item, result))
            else:
                killed[module] += 1
        pending = db.num_work_items - db.num_results
    total_k, total_s = sum(killed.values()), sum(survived.values())
    for module in sorted(killed.keys() | survived.keys()):
        k, s = killed[module], survived[module]
        print(f"{module:40} killed {k:4}  survived {s:3}  ({100 * s / (k + s):.1f}% survive)")
    rate = 100 * total_s / max(total_k + total_s, 1)
    print(f"{'all':40} killed {total_k:4}  survived {total_s:3}  ({rate:.1f}% survive)"
          f"{f'  {pending} not run' if pending else ''}")
    for item, result in survivors:
        spec = item.mutations[0]
        print(f"\nsurvivor {spec.module_path}:{spec.start_pos[0]} {spec.operator_name}")
        print((result.diff or "").strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
