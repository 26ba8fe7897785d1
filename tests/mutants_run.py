"""`make mutants`' test command: the guard tests (tests/test_guarantees*.py) of the module that
cosmic-ray has mutated in this copy of the tree, found by comparing each mutated module with
the original tree (MUTANTS_ORIGINAL). Exit status: pytest's (non-zero: the mutant was killed).

Running only the tests that guard the mutated module keeps a mutant at seconds; each module's
tests are listed here, by the words their names carry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FAST = "not resume and not reproduce and not two_ranks and not one_process and not not_a_run"
TESTS = {
    "src/expkit/utils/files.py": FAST,
    "src/expkit/errors.py": FAST,
    "src/expkit/training/checkpoint.py": FAST,
    "src/expkit/training/rng.py": FAST,
    "src/expkit/engine/resume.py": "resume or not_a_run",
    "src/expkit/training/state.py": "resume",
    "src/expkit/engine/reproduce.py": "reproduce",
    "src/expkit/training/distributed.py": "one_process or two_ranks",
    "src/expkit/engine/callbacks.py": "heartbeat",
    "src/expkit/training/evaluate.py": "clean_splits",
}


def mutated(original: Path) -> list[str]:
    """The modules of TESTS whose text differs from the original tree's."""
    return [module for module in TESTS
            if Path(module).read_bytes() != (original / module).read_bytes()]


def main() -> int:
    """Run the mutated module's guard tests (all of them when none or several differ)."""
    changed = mutated(Path(os.environ["MUTANTS_ORIGINAL"]))
    select = ["-k", TESTS[changed[0]]] if len(changed) == 1 else []
    return subprocess.call([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0",
                            "-p", "no:cacheprovider", "-o", "addopts=",
                            "tests/test_guarantees.py", "tests/test_guarantees_runs.py",
                            "tests/test_guarantees_life.py", *select])


if __name__ == "__main__":
    sys.exit(main())
