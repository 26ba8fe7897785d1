"""`make mutants`' helpers for a cosmic-ray session.

    python tests/mutants_summary.py --skip-annotations SESSION   # after init, before exec
    python tests/mutants_summary.py SESSION                      # after exec: the figures

Every module of expkit starts with `from __future__ import annotations`: a type annotation is
a string that nothing evaluates, so a mutant inside one (`str | None` -> `str >> None`) cannot
change behaviour. Those are marked skipped before the run (an equivalent mutant, not a test's
failure). The summary prints killed and surviving mutants per module, then each survivor
(module:line, operator, diff) for a person to judge.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import MutationSpec, TestOutcome, WorkerOutcome, WorkResult


def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions (line, column) of every annotation in a module."""
    spans = []
    try:
        tree = ast.parse(path.read_text())
    except SyntaxError:  # the file is mutated at this moment (a run in progress)
        return []
    for node in ast.walk(tree):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.arg):
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        spans += [((a.lineno, a.col_offset), (a.end_lineno or a.lineno, a.end_col_offset or 0))
                  for a in found if a is not None]
    return spans


def in_annotation(spec: MutationSpec, spans: dict[Path, list[tuple[tuple[int, int], tuple[int, int]]]]
                  ) -> bool:
    """Whether the mutation lies inside a type annotation of its module."""
    if spec.module_path not in spans:
        spans[spec.module_path] = annotation_spans(spec.module_path)
    return any(start <= tuple(spec.start_pos) and tuple(spec.end_pos) <= end
               for start, end in spans[spec.module_path])


def skip_annotations(session: str) -> int:
    """Mark the annotation mutants of a fresh session as skipped."""
    spans: dict[Path, list[tuple[tuple[int, int], tuple[int, int]]]] = {}
    with use_db(session, WorkDB.Mode.open) as db:
        ids = [item.job_id for item in db.pending_work_items
               if all(in_annotation(spec, spans) for spec in item.mutations)]
        db.set_multiple_results(ids, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                output="equivalent: inside a type annotation"))
    print(f"{len(ids)} mutants inside type annotations skipped (equivalent: never evaluated)")
    return 0


def summary(session: str) -> int:
    """Print the figures; exit 0 (judging survivors is a person's job, see the README)."""
    killed: Counter[str] = Counter()
    survived: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    survivors = []
    spans: dict[Path, list[tuple[tuple[int, int], tuple[int, int]]]] = {}
    with use_db(session, WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            spec = item.mutations[0]
            module = str(spec.module_path)
            if result.worker_outcome == WorkerOutcome.SKIPPED or in_annotation(spec, spans):
                skipped[module] += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                survived[module] += 1
                survivors.append((item, result))
            else:
                killed[module] += 1
        pending = db.num_work_items - db.num_results
    for module in sorted(killed.keys() | survived.keys()):
        k, s = killed[module], survived[module]
        print(f"{module:36} killed {k:4}  survived {s:3}  ({100 * s / (k + s):4.1f}% survive)"
              f"  + {skipped[module]} in annotations")
    total_k, total_s = sum(killed.values()), sum(survived.values())
    print(f"{'all':36} killed {total_k:4}  survived {total_s:3}  "
          f"({100 * total_s / max(total_k + total_s, 1):4.1f}% survive)  + "
          f"{sum(skipped.values())} in annotations{f'; {pending} not run' if pending else ''}")
    for item, result in survivors:
        spec = item.mutations[0]
        print(f"\nsurvivor {spec.module_path}:{spec.start_pos[0]} {spec.operator_name}")
        print("\n".join(line for line in (result.diff or "").splitlines()
                        if line[:1] in "+-" and line[:3] not in ("+++", "---")))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--skip-annotations":
        raise SystemExit(skip_annotations(sys.argv[2]))
    raise SystemExit(summary(sys.argv[1]))
