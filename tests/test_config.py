"""Machine config: written on first run, EXPKIT_CONFIG, env overrides, clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY, Workspace
from expkit.config.machine import load_machine_config


def test_expkit_config_points_elsewhere_and_paths_are_relative_to_it(
        data_workspace: Workspace) -> None:
    other = data_workspace.root / "machine"
    other.mkdir()
    (other / "machine.yaml").write_text(f"cache_dir: {data_workspace.cache}\nresults_dir: out\n")
    result = data_workspace.run("--experiment_id=mnist", *TINY,
                                env={"EXPKIT_CONFIG": str(other / "machine.yaml")})
    assert result.returncode == 0, result.stderr
    assert list((other / "out" / "mnist").iterdir())
    assert not (data_workspace.root / "config.yaml").exists()


def test_environment_overrides_results_dir(data_workspace: Workspace) -> None:
    target = data_workspace.root / "elsewhere"
    result = data_workspace.run("--experiment_id=mnist", *TINY,
                                env={"EXPKIT_RESULTS_DIR": str(target)})
    assert result.returncode == 0, result.stderr
    assert list((target / "mnist").iterdir()) and not data_workspace.results.exists()


BAD_CONFIGS = [
    ("cache_dir: [unclosed\nresults_dir: r\n", ["config.yaml:", "invalid YAML"]),
    ("cache_dir: c\nwandb:\n  mode: sometimes\n",
     ["config.yaml:3: key 'wandb.mode': got 'sometimes'", "'online', 'offline' or 'disabled'"]),
    ("cache_dirr: c\n", ["config.yaml:1: unknown key 'cache_dirr' (did you mean 'cache_dir'?)"]),
    ("results_dir: r\nwandb: {projekt: x}\n",
     ["config.yaml:2: unknown key 'wandb.projekt' (did you mean 'project'?)"]),
    ("results_dir: r\nmlflow:\n  tracking_url: http://h:5000\n",
     ["config.yaml:3: unknown key 'mlflow.tracking_url' (did you mean 'tracking_uri'?)"]),
    ("cache_dir: 12\n", ["config.yaml:1: key 'cache_dir': got 12; give a folder path as a string"]),
    ("- just\n- a list\n", ["expected a mapping of keys to values"]),
]


@pytest.mark.parametrize(("text", "needles"), BAD_CONFIGS)
def test_broken_config_is_a_clear_error(data_workspace: Workspace, text: str,
                                        needles: list[str]) -> None:
    (data_workspace.root / "config.yaml").write_text(text)
    result = data_workspace.run("--experiment_id=mnist", *TINY)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert not data_workspace.results.exists()
    assert (data_workspace.root / "config.yaml").read_text() == text  # left as it was


def test_config_that_is_a_directory(data_workspace: Workspace) -> None:
    (data_workspace.root / "config.yaml").mkdir()
    result = data_workspace.run("--experiment_id=mnist", *TINY)
    assert result.returncode == 2 and "is a directory" in result.stderr


def test_missing_keys_take_their_defaults(tmp_path: Path) -> None:
    """The README's promise: a config.yaml may hold only what differs from the defaults."""
    (tmp_path / "config.yaml").write_text("results_dir: elsewhere\n")
    config = load_machine_config(tmp_path / "config.yaml", announce=lambda _: None)
    assert config.results_dir == tmp_path / "elsewhere"
    assert config.cache_dir == tmp_path / "cache" and config.wandb.project == "expkit"


def test_mlflow_settings_from_file_and_environment_are_recorded_without_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yaml").write_text(
        "mlflow:\n  tracking_uri: https://me:FILEPW@mlflow.lab\n  experiment_name: team\n")
    config = load_machine_config(tmp_path / "config.yaml", announce=lambda _: None)
    assert config.mlflow.experiment_name == "team"
    assert config.public()["mlflow"] == {"tracking_uri": "https://me:***@mlflow.lab",
                                         "experiment_name": "team"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://you:ENVPW@10.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "other")
    config = load_machine_config(tmp_path / "config.yaml", announce=lambda _: None)
    assert config.mlflow.tracking_uri is not None
    assert config.mlflow.tracking_uri.get_secret_value() == "http://you:ENVPW@10.0.0.1:5000"
    assert config.mlflow_uri() == "http://you:***@10.0.0.1:5000"
    assert config.mlflow.experiment_name == "other"
    assert {"MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"} <= set(config.from_environment)
    assert "ENVPW" not in repr(config) and "ENVPW" not in str(config.public())


def test_did_you_mean_counts_a_swap_as_one_edit_and_ignores_case() -> None:
    """The suggestion is the option with the fewest edits, a swap of neighbours being one:
    `val_mea` is `val_mae` (one swap), not `val_mse` (two substitutions, though difflib rates
    it as close); a word in other capitals is that option."""
    import difflib

    from expkit.utils.suggest import closest, edits

    options = ["val_loss", "val_mse", "val_mae", "val_r2"]
    assert difflib.get_close_matches("val_mea", options, n=1) == ["val_mse"]
    assert closest("val_mea", options) == "val_mae"
    assert (edits("val_mea", "val_mae"), edits("val_mea", "val_mse")) == (1, 2)
    assert edits("kitten", "sitting") == 3 and edits("", "abc") == 3 and edits("ab", "ba") == 1
    assert closest("GRU", ["lstm", "gru"]) == "gru" and closest("Epochs", ["epochs"]) == "epochs"
    assert closest("xyz", ["mnist", "diabetes"]) is None
    assert closest("abcdefg", ["xyzdefg"]) is None, "3 edits in 7 letters is too far"
    assert closest("abcdefg", ["abzdefg"]) == "abzdefg"
    assert edits("ca", "ab") == 2, "only a swap of the same two letters is one edit"
