"""`make mutants`' test command: the fast tests of the module that cosmic-ray has mutated in
this copy of the tree, found by comparing each mutated module with the tree as it was copied
(MUTANTS_ORIGINAL: a copy of its src/, so that editing the working tree meanwhile changes
nothing). Exit status: pytest's (non-zero: the mutant was killed).

Running only the tests that check the mutated module keeps a mutant at seconds; each module's
tests are listed here (files, and the words their names carry). tests/test_mutants_gate.py
checks that every module of tests/mutants.toml has its tests here, and that they pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FAST = "not resume and not reproduce and not two_ranks and not one_process and not not_a_run"
GUARDS = ["tests/test_guarantees.py", "tests/test_guarantees_runs.py",
          "tests/test_guarantees_life.py"]
#: each mutated module's tests: pytest's arguments (files, and -k to choose among them)
TESTS: dict[str, list[str]] = {
    "src/expkit/utils/files.py": [*GUARDS, "-k", FAST],
    "src/expkit/errors.py": [*GUARDS, "-k", FAST],
    "src/expkit/training/checkpoint.py": [*GUARDS, "-k", FAST],
    "src/expkit/training/rng.py": [*GUARDS, "-k", FAST],
    "src/expkit/engine/resume.py": [*GUARDS, "-k", "resume or not_a_run"],
    "src/expkit/training/state.py": [*GUARDS, "-k", "resume"],
    "src/expkit/engine/reproduce.py": [*GUARDS, "-k", "reproduce"],
    "src/expkit/training/distributed.py": [*GUARDS, "-k", "one_process or two_ranks"],
    "src/expkit/engine/callbacks.py": [*GUARDS, "-k", "heartbeat"],
    "src/expkit/training/evaluate.py": [*GUARDS, "-k", "clean_splits"],
    "src/expkit/training/averaging.py": ["tests/test_rules.py", "tests/test_averaging.py", "-k",
                                         "ema_equals or swa_equals or swa_from or averaging_flags"],
    "src/expkit/training/early_stopping.py": ["tests/test_rules.py", "-k", "early_stopping"],
    "src/expkit/training/gradients.py": ["tests/test_rules.py", "tests/test_gradients.py", "-k",
                                         "gradient_watch or diverged"],
    "src/expkit/training/timing.py": ["tests/test_rules.py", "tests/test_timing.py", "-k",
                                      "slow_data or throughput or off_means or time_line or synced"],
    "src/expkit/engine/lrfind.py": ["tests/test_lrfind.py"],
    "src/expkit/engine/export.py": ["tests/test_rules.py", "tests/test_export.py", "-k",
                                    "exported or tolerance or clear_errors or card"],
    "src/expkit/engine/api.py": ["tests/test_python_api.py", "-k",
                                 "leaves_the_process or bad_keywords or args_instance"],
    "src/expkit/rundir/summaries.py": ["tests/test_many_runs.py", "-k",
                                       "never_shows or corrupt or killed_run_resumed or type_and "
                                       "or two_seconds"],
    "src/expkit/rundir/groups.py": ["tests/test_tables.py"],
    "src/expkit/utils/stats.py": ["tests/test_tables.py", "tests/test_repeat.py", "-k",
                                  "not slow and (tables or statistics or welch or quantiles or "
                                  "summaries or one_value or best)"],
    "src/expkit/reports/tables.py": ["tests/test_tables.py"],
    "src/expkit/utils/suggest.py": ["tests/test_config.py", "-k", "did_you_mean"],
    "src/expkit/data/preprocess.py": ["tests/test_data.py", "-k", "preprocessing"],
    "src/expkit/engine/segments.py": ["tests/test_rules.py", "tests/test_python_api.py",
                                      "tests/test_resume.py", "-k",
                                      "flag_values or leaves_the_process or stop_signal"],
    "src/expkit/engine/init.py": ["tests/test_finetune.py"],
    "src/expkit/engine/card.py": ["tests/test_export.py", "-k", "card or clear_errors or tolerance"],
}


def mutated(original: Path) -> list[str]:
    """The modules of TESTS whose text differs from the original tree's."""
    return [module for module in TESTS
            if Path(module).read_bytes() != (original / module).read_bytes()]


def main() -> int:
    """Run the mutated module's tests (the guard tests when none or several differ)."""
    changed = mutated(Path(os.environ["MUTANTS_ORIGINAL"]))  # the tree as copied, unmutated
    chosen = TESTS[changed[0]] if len(changed) == 1 else GUARDS
    return subprocess.call([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0",
                            "-p", "no:cacheprovider", "-o", "addopts=", *chosen])


if __name__ == "__main__":
    sys.exit(main())
