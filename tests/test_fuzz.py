"""Fuzzing the command line: random argv for every registered experiment is either a valid parse
or a clean usage error (exit 2, `prog: error: ...` lines), never a traceback."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expkit.cli.main import main
from expkit.config.args import flag_table
from expkit.config.registry import Registry

REGISTRY = Registry.from_module("lab.registry")
FLAGS = {exp_id: sorted(flag_table(REGISTRY.load(exp_id).args_class)) for exp_id in REGISTRY.ids()}
ALL_FLAGS = sorted({f for flags in FLAGS.values() for f in flags} | {"config", "resume", "help"})

values = st.one_of(
    st.text(max_size=12),                                           # unicode, empty, control chars
    st.integers(min_value=-(10**30), max_value=10**30).map(str),    # huge numbers
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "auto", "none", "null", "[]", "[64,32]", "[a]", "[1e9]",
                     "1e-4", "3e-4", "-0", "0x10", "[[1]]", "{}", "nan", "inf", "relu", "adam",
                     "fashion_mnist", "../..", "\x00", "é", "🙂"]),
)


@st.composite
def argv(draw: st.DrawFn, exp_id: str) -> list[str]:
    tokens = [f"--experiment_id={exp_id}"]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        flag = draw(st.sampled_from(FLAGS[exp_id] if kind < 7 else ALL_FLAGS))
        if kind < 5:
            tokens.append(f"--{flag}={draw(values)}")
        elif kind < 7:
            tokens += [f"--{flag}", draw(values)]
        elif kind < 8:
            tokens.append(f"--{flag}")
        else:
            tokens.append(draw(st.text(max_size=10)))                # a stray token
    order = draw(st.permutations(tokens))
    return [*order, "--print_config"]  # a valid parse prints the config instead of training


@pytest.mark.parametrize("exp_id", REGISTRY.ids())
def test_random_argv_parses_or_fails_cleanly(exp_id: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a stray --resume or --config path resolves here, not in the repo
    monkeypatch.setenv("EXPKIT_CONFIG", str(tmp_path / "config.yaml"))
    outcomes = {"parsed": 0, "usage error": 0}

    @given(argv(exp_id))  # examples: the profile in conftest.py (fixed in the suite, `make fuzz` explores)
    def check(args: list[str]) -> None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args, registry="lab.registry", prog="run.py")
        if code == 0:
            outcomes["parsed"] += 1
            assert err.getvalue() == "", err.getvalue()
        else:
            outcomes["usage error"] += 1
            assert code == 2, (args, code, err.getvalue())
            lines = err.getvalue().strip().splitlines()
            assert lines and all(line.startswith("run.py: ") for line in lines), (args, lines)
        assert "Traceback" not in err.getvalue()
        assert "a bug in expkit" not in err.getvalue(), (args, err.getvalue())

    check()
    assert outcomes["parsed"] > 0 and outcomes["usage error"] > 0, outcomes
    assert not (tmp_path / "results").exists(), "a parse or an error never trains"
