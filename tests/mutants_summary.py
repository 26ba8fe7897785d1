"""`make mutants`' helpers for a cosmic-ray session.

    python tests/mutants_summary.py --skip-annotations SESSION   # after init, before exec
    python tests/mutants_summary.py --sample N --seed S SESSION  # keep a seeded sample of each module
    python tests/mutants_summary.py SESSION [EQUIVALENTS.md]     # after exec: the figures
    python tests/mutants_summary.py --retry-survivors SESSION    # run the survivors again

The sample: each module's mutants (those outside annotations) in a stable order (line,
column, operator, occurrence), N of them drawn by `random.Random("S:<module>")`; the others are
marked skipped ("not sampled"). A mutant's id, `module:line:column:operator:occurrence`, is the
same in every session of the same code, so that a sample can be drawn again and a survivor
named. Survivors judged equivalent (no test can tell them apart) are listed in EQUIVALENTS.md
(docs/reliability.md) as "- `ID`: reason"; the kill rate leaves them out, with a Wilson 95%
interval over the rest.

Every module of expkit starts with `from __future__ import annotations`: a type annotation is
a string that nothing evaluates, so a mutant inside one (`str | None` -> `str >> None`) cannot
change behaviour. Those are marked skipped before the run (an equivalent mutant, not a test's
failure). The summary prints killed and surviving mutants per module, then each survivor
(module:line, operator, diff) for a person to judge.
"""

from __future__ import annotations

import ast
import math
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cosmic-ray comes with `pip install -e .[mutants]`, which `make mutants` runs
    from cosmic_ray.work_item import MutationSpec


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
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans: dict[Path, list[tuple[tuple[int, int], tuple[int, int]]]] = {}
    with use_db(session, WorkDB.Mode.open) as db:
        ids = [item.job_id for item in db.pending_work_items
               if all(in_annotation(spec, spans) for spec in item.mutations)]
        db.set_multiple_results(ids, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                output="equivalent: inside a type annotation"))
    print(f"{len(ids)} mutants inside type annotations skipped (equivalent: never evaluated)")
    return 0


def mutant_id(spec: MutationSpec) -> str:
    """A mutant's name, the same in every session of the same code."""
    return (f"{spec.module_path}:{spec.start_pos[0]}:{spec.start_pos[1]}:{spec.operator_name}:"
            f"{spec.occurrence}")


def _order(spec: MutationSpec) -> tuple[str, tuple[int, int], tuple[int, int], str, int]:
    return (str(spec.module_path), tuple(spec.start_pos), tuple(spec.end_pos),  # type: ignore[return-value]
            spec.operator_name, spec.occurrence)


def pick(count: int, n: int, seed: str, module: str) -> set[int]:
    """Which of a module's `count` mutants (in their stable order) the sample keeps: `n` drawn
    by `random.Random("SEED:MODULE")`, or all of them when n is 0 or not below count."""
    if not 0 < n < count:
        return set(range(count))
    return set(random.Random(f"{seed}:{module}").sample(range(count), n))


def sample(session: str, n: int, seed: str) -> int:
    """Keep `n` seeded mutants per module (all when n is 0), mark the others skipped; print
    how many of each and write the sample's ids beside the session (SESSION.sample)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    chosen: list[str] = []
    with use_db(session, WorkDB.Mode.open) as db:
        by_module: dict[str, list] = defaultdict(list)  # type: ignore[type-arg]
        for item in db.pending_work_items:
            by_module[str(item.mutations[0].module_path)].append(item)
        dropped = []
        for module, items in sorted(by_module.items()):
            items.sort(key=lambda item: _order(item.mutations[0]))
            keep = pick(len(items), n, seed, module)
            dropped += [item.job_id for k, item in enumerate(items) if k not in keep]
            chosen += [mutant_id(items[k].mutations[0]) for k in sorted(keep)]
            print(f"{module}: {len(keep)} of {len(items)} mutants sampled (seed {seed})")
        db.set_multiple_results(dropped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                    output="not sampled"))
    Path(f"{session}.sample").write_text("\n".join(chosen) + "\n")
    return 0


def equivalents(page: Path | None) -> dict[str, str]:
    """The mutants judged equivalent, by id, with the reason: lines "- `ID`: reason"."""
    if page is None or not page.is_file():
        return {}
    return dict(re.findall(r"^- `([^`]+:\d+:\d+:[^`]+:\d+)`: (.+)$", page.read_text(), re.M))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion k/n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summary(session: str, page: Path | None = None) -> int:
    """Print the figures per module (sampled, killed, equivalent, the kill rate with its 95%
    interval, as a Markdown row), then each survivor not judged equivalent; exit 0 (judging
    survivors is a person's job)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    judged = equivalents(page)
    sampled: Counter[str] = Counter()
    killed: Counter[str] = Counter()
    equivalent: Counter[str] = Counter()
    survivors = []
    with use_db(session, WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            spec = item.mutations[0]
            module = str(spec.module_path)
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            sampled[module] += 1
            if result.test_outcome == TestOutcome.SURVIVED:
                if mutant_id(spec) in judged:
                    equivalent[module] += 1
                else:
                    survivors.append((item, result))
            else:
                killed[module] += 1
        pending = db.num_work_items - db.num_results
    print("| module | sampled | killed | equivalent | kill rate (95% interval) |")
    print("|---|--:|--:|--:|---|")
    for module in sorted(sampled):
        judged_n = sampled[module] - equivalent[module]
        low, high = wilson(killed[module], judged_n)
        rate = killed[module] / judged_n if judged_n else math.nan
        print(f"| {module.removeprefix('src/expkit/')} | {sampled[module]} | {killed[module]} | "
              f"{equivalent[module]} | {rate:.0%} ({low:.0%}-{high:.0%}) |")
    if pending:
        print(f"\n{pending} mutants not run yet")
    for item, result in survivors:
        spec = item.mutations[0]
        print(f"\nsurvivor {mutant_id(spec)}")
        print("\n".join(line for line in (result.diff or "").splitlines()
                        if line[:1] in "+-" and line[:3] not in ("+++", "---")))
    return 0


def retry_survivors(session: str) -> int:
    """Forget the survivors' results, so that the next `cosmic-ray exec` runs them again
    (after tests were added, or a run that could not tell which module was mutated)."""
    import sqlite3

    with sqlite3.connect(session) as db:
        n = db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount
    print(f"{n} survivors to run again")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--retry-survivors":
        raise SystemExit(retry_survivors(sys.argv[2]))
    if sys.argv[1] == "--skip-annotations":
        raise SystemExit(skip_annotations(sys.argv[2]))
    if sys.argv[1] == "--sample":
        raise SystemExit(sample(sys.argv[5], int(sys.argv[2]), sys.argv[4]))
    raise SystemExit(summary(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None))
