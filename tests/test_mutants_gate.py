"""The mutation gate's own parts: every module of tests/mutants.toml has its tests in
tests/mutants_run.py (and the files exist), a sample is drawn again the same from its seed,
the kill rate's interval is Wilson's, and the equivalents docs/reliability.md lists name
modules of the gate."""

from __future__ import annotations

import subprocess
import sys

import tomllib

from conftest import REPO
from mutants_run import TESTS
from mutants_summary import equivalents, pick, wilson


def test_every_module_of_the_gate_has_its_tests() -> None:
    modules = tomllib.loads((REPO / "tests" / "mutants.toml").read_text())["cosmic-ray"]["module-path"]
    assert set(modules) == set(TESTS), "tests/mutants.toml and tests/mutants_run.py name the same modules"
    for module, args in TESTS.items():
        assert (REPO / module).is_file(), module
        files = [a for a in args if a.startswith("tests/")]
        assert files and all((REPO / f).is_file() for f in files), module
    for module in ("training/averaging.py", "training/early_stopping.py", "training/gradients.py",
                   "training/timing.py", "engine/lrfind.py", "engine/export.py", "engine/api.py",
                   "rundir/summaries.py", "rundir/groups.py", "utils/stats.py", "reports/tables.py"):
        assert f"src/expkit/{module}" in modules


def test_a_sample_is_the_same_from_its_seed_and_another_from_another() -> None:
    first = pick(120, 40, "1", "src/expkit/utils/stats.py")
    assert len(first) == 40 and all(0 <= k < 120 for k in first)
    assert pick(120, 40, "1", "src/expkit/utils/stats.py") == first
    assert pick(120, 40, "2", "src/expkit/utils/stats.py") != first
    assert pick(120, 40, "1", "src/expkit/reports/tables.py") != first
    assert pick(30, 40, "1", "m") == set(range(30)) and pick(30, 0, "1", "m") == set(range(30))


def test_the_kill_rates_interval_is_wilsons() -> None:
    low, high = wilson(38, 40)  # p = 0.95, n = 40: 0.835 to 0.986
    assert (round(low, 3), round(high, 3)) == (0.835, 0.986)
    assert wilson(40, 40)[1] == 1.0 and wilson(0, 10)[0] == 0.0


def test_the_equivalents_listed_name_modules_of_the_gate() -> None:
    listed = equivalents(REPO / "docs" / "reliability.md")
    for mutant, reason in listed.items():
        module = mutant.split(":")[0]
        assert module in TESTS, mutant
        assert len(reason) > 10, f"{mutant}: say why it is equivalent"


def test_a_module_not_in_the_gate_is_refused_in_one_line() -> None:
    done = subprocess.run([sys.executable, str(REPO / "tests" / "mutants_config.py"),
                           str(REPO / "tests" / "mutants.toml"), "src/expkit/nope.py"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("MODULE=src/expkit/nope.py: not in")
    done = subprocess.run([sys.executable, str(REPO / "tests" / "mutants_config.py"),
                           str(REPO / "tests" / "mutants.toml"), "src/expkit/utils/stats.py"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    assert tomllib.loads(done.stdout)["cosmic-ray"]["module-path"] == ["src/expkit/utils/stats.py"]
