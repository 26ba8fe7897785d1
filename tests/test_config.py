"""Machine config: written on first run, EXPKIT_CONFIG, env overrides, clear errors for bad files."""

from __future__ import annotations

import pytest

from conftest import TINY, Workspace


def test_expkit_config_points_elsewhere_and_paths_are_relative_to_it(
        data_workspace: Workspace) -> None:
    other = data_workspace.root / "machine"
    other.mkdir()
    (other / "machine.yaml").write_text(f"cache_dir: {data_workspace.cache}\nresults_dir: out\n")
    result = data_workspace.cli("--experiment_id=mnist", *TINY,
                                env={"EXPKIT_CONFIG": str(other / "machine.yaml")})
    assert result.returncode == 0, result.stderr
    assert list((other / "out" / "mnist").iterdir())
    assert not (data_workspace.root / "config.yaml").exists()


def test_environment_overrides_results_dir(data_workspace: Workspace) -> None:
    target = data_workspace.root / "elsewhere"
    result = data_workspace.cli("--experiment_id=mnist", *TINY,
                                env={"EXPKIT_RESULTS_DIR": str(target)})
    assert result.returncode == 0, result.stderr
    assert list((target / "mnist").iterdir()) and not data_workspace.results.exists()


BAD_CONFIGS = [
    ("cache_dir: [unclosed\nresults_dir: r\n", ["config.yaml:", "invalid YAML"]),
    ("cache_dir: c\nwandb:\n  mode: sometimes\n",
     ["config.yaml:3: key 'wandb.mode': got 'sometimes'", "'online', 'offline' or 'disabled'"]),
    ("cache_dirr: c\n", ["config.yaml:1: key 'cache_dirr'", "Extra inputs are not permitted"]),
    ("- just\n- a list\n", ["expected a mapping of keys to values"]),
]


@pytest.mark.parametrize(("text", "needles"), BAD_CONFIGS)
def test_broken_config_is_a_clear_error(data_workspace: Workspace, text: str,
                                        needles: list[str]) -> None:
    (data_workspace.root / "config.yaml").write_text(text)
    result = data_workspace.cli("--experiment_id=mnist", *TINY)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert not data_workspace.results.exists()
    assert (data_workspace.root / "config.yaml").read_text() == text  # left as it was


def test_config_that_is_a_directory(data_workspace: Workspace) -> None:
    (data_workspace.root / "config.yaml").mkdir()
    result = data_workspace.cli("--experiment_id=mnist", *TINY)
    assert result.returncode == 2 and "is a directory" in result.stderr
