"""Machine settings: config.yaml (+ environment variables) for paths, trackers and secrets.

What changes per machine, not per experiment. Written with commented defaults on first use.
Secrets are `SecretStr`: they print as '**********' and are never dumped in clear.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from expkit.config.parsing import describe_validation_error
from expkit.errors import UsageError
from expkit.utils.files import atomic_write_text
from expkit.utils.mappings import key_line, read_mapping
from expkit.utils.suggest import closest

CONFIG_ENV = "EXPKIT_CONFIG"

#: environment variable -> key it overrides (documented in the README and the written file)
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "EXPKIT_CACHE_DIR": ("cache_dir",),
    "EXPKIT_RESULTS_DIR": ("results_dir",),
    "WANDB_ENTITY": ("wandb", "entity"),
    "WANDB_PROJECT": ("wandb", "project"),
    "WANDB_MODE": ("wandb", "mode"),
    "WANDB_API_KEY": ("wandb", "api_key"),
    "MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri"),
    "MLFLOW_EXPERIMENT_NAME": ("mlflow", "experiment_name"),
}
#: sections of config.yaml and the keys each holds (for unknown-key messages)
SECTIONS = ("wandb", "mlflow", "slurm")

DEFAULT_CONFIG = """\
# expkit machine config: what differs between machines, not between experiments.
# Relative paths are relative to this file's folder. Environment variables override keys.

# Datasets and downloads are kept here.                      (env: EXPKIT_CACHE_DIR)
cache_dir: cache
# Every run writes a folder results/<experiment_id>/<time>-<id>/ here. (env: EXPKIT_RESULTS_DIR)
results_dir: results

# Used only with --use_wandb=true.
wandb:
  entity: null        # your wandb user or team; null = your default      (env: WANDB_ENTITY)
  project: expkit     # project the runs are logged to                    (env: WANDB_PROJECT)
  mode: online        # online | offline (sync later: `wandb sync`) | disabled  (env: WANDB_MODE)
  api_key: null       # prefer the env var WANDB_API_KEY; never copied into a run (env: WANDB_API_KEY)

# Used only with --use_mlflow=true. Credentials: MLFLOW_TRACKING_USERNAME/_PASSWORD or
# MLFLOW_TRACKING_TOKEN in the environment (read by mlflow; never copied into a run).
mlflow:
  tracking_uri: null     # e.g. http://mlflow.lab:5000; null = mlflow's default (env: MLFLOW_TRACKING_URI)
  experiment_name: null  # null = the experiment id (mnist, ...)        (env: MLFLOW_EXPERIMENT_NAME)

# Defaults of `expkit submit` (SLURM batch jobs); its --slurm_* flags override them.
slurm:
  partition: null     # null = the cluster's default partition
  time: null          # time limit, as sbatch takes it: 90, 1:30:00, 2-00:00:00
  cpus_per_task: null
  gpus_per_node: null # > 1 (or ranks_per_node > 1, or nodes > 1): torchrun, one rank per GPU
  ranks_per_node: null
  nodes: 1
  mem: null           # e.g. 16G
  account: null
  qos: null
  signal_seconds: 120 # the job is warned this long before its time limit: checkpoint, requeue
  sbatch: []          # any other sbatch options, e.g. ["--constraint=a100", "--exclusive"]
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WandbSettings(_Strict):
    """Where wandb logs go."""

    entity: str | None = Field(None, description="wandb user or team")
    project: str = Field("expkit", description="wandb project")
    mode: Literal["online", "offline", "disabled"] = Field("online", description="wandb mode")
    api_key: SecretStr | None = Field(None, description="wandb API key (secret)")


class MlflowSettings(_Strict):
    """Where MLflow runs go."""

    tracking_uri: SecretStr | None = Field(None, description="MLflow tracking server (a password "
                                           "inside it is a secret)")
    experiment_name: str | None = Field(None, description="MLflow experiment; auto = the "
                                        "experiment id")


class SlurmSettings(_Strict):
    """Defaults of the SLURM batch jobs `expkit submit` writes."""

    partition: str | None = Field(None, description="partition (sbatch --partition)")
    time: str | None = Field(None, description="time limit (sbatch --time): 90, 1:30:00, 2-00:00:00")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per task")
    gpus_per_node: int | None = Field(None, ge=0, description="GPUs per node (one rank each)")
    ranks_per_node: int | None = Field(None, ge=1, description="processes per node (torchrun)")
    nodes: int = Field(1, ge=1, description="nodes")
    mem: str | None = Field(None, description="memory per node (sbatch --mem), e.g. 16G")
    account: str | None = Field(None, description="account to charge")
    qos: str | None = Field(None, description="quality of service")
    signal_seconds: int = Field(120, ge=10, description="warn the job this long before its end")
    sbatch: list[str] = Field(default_factory=list, description="further sbatch options")


def redact(url: str) -> str:
    """A URL without its password (for files, logs and the console)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


class MachineConfig(_Strict):
    """Settings of this machine: directories and tracker credentials."""

    cache_dir: Path = Field(Path("cache"), description="datasets and downloads")
    results_dir: Path = Field(Path("results"), description="run directories")
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    path: Path | None = Field(None, exclude=True, description="the file this was read from")
    from_environment: list[str] = Field(default_factory=list, exclude=True,
                                        description="environment variables that overrode keys")

    def public(self) -> dict[str, Any]:
        """What a run records of the machine settings: no secret, only whether one is set."""
        return {"config_file": str(self.path), "cache_dir": str(self.cache_dir),
                "results_dir": str(self.results_dir),
                "wandb": {"entity": self.wandb.entity, "project": self.wandb.project,
                          "mode": self.wandb.mode, "api_key_set": self.wandb.api_key is not None},
                "mlflow": {"tracking_uri": self.mlflow_uri(),
                           "experiment_name": self.mlflow.experiment_name},
                "from_environment": self.from_environment}

    def mlflow_uri(self) -> str | None:
        """The MLflow tracking URI as it may be shown: any password in it masked."""
        uri = self.mlflow.tracking_uri
        return redact(uri.get_secret_value()) if uri else None


def _unknown_keys(data: dict[str, Any]) -> list[tuple[str, ...]]:
    known = {"cache_dir", "results_dir", *SECTIONS}
    found: list[tuple[str, ...]] = [(str(k),) for k in data if k not in known]
    for section in SECTIONS:
        if isinstance(data.get(section), dict):
            fields = MachineConfig.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
            found += [(section, str(k)) for k in data[section] if k not in fields]
    return found


def _did_you_mean(key: tuple[str, ...]) -> str:

    options = (MachineConfig.model_fields[key[0]].annotation.model_fields  # type: ignore[union-attr]
               if len(key) > 1 else ("cache_dir", "results_dir", *SECTIONS))
    match = closest(key[-1], options)
    return f" (did you mean {match!r}?)" if match else f"; known keys: {', '.join(options)}"


def _without(data: dict[str, Any], keys: list[tuple[str, ...]]) -> dict[str, Any]:
    """`data` less the unknown keys (each already reported with a suggestion)."""
    top = {k: v for k, v in data.items() if (str(k),) not in keys}
    for section in SECTIONS:
        if isinstance(top.get(section), dict):
            top[section] = {k: v for k, v in top[section].items() if (section, str(k)) not in keys}
    return top


def config_path() -> Path:
    """Where config.yaml is: $EXPKIT_CONFIG, else ./config.yaml."""
    return Path(os.environ.get(CONFIG_ENV) or "config.yaml").absolute()


def load_machine_config(path: Path | None = None, announce: Any = print) -> MachineConfig:
    """Read config.yaml (writing the commented default first if it is missing), then env overrides."""
    path = path or config_path()
    first_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone writes files
    if not path.exists() and first_rank:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, DEFAULT_CONFIG)
        except OSError as e:
            raise UsageError(f"{path}: cannot write the default machine config: {e.strerror}; "
                             f"set {CONFIG_ENV} to a writable location") from None
        announce(f"expkit: wrote the default machine config to {path} (edit it to change the "
                 "cache/results folders or wandb settings); continuing")
    try:
        data, text = (read_mapping(path, "the machine config YAML") if path.exists()
                      else (yaml.safe_load(DEFAULT_CONFIG) or {}, DEFAULT_CONFIG))
    except UsageError as e:
        raise UsageError(*e.lines, hint=f"fix {path}, or delete it to have the default written "
                         f"again (or point {CONFIG_ENV} elsewhere)") from None
    used = []
    for env, key in ENV_OVERRIDES.items():
        if os.environ.get(env):
            used.append(env)
            node = data
            for part in key[:-1]:
                node = node.setdefault(part, {}) if isinstance(node.get(part), dict | None) else {}
            node[key[-1]] = os.environ[env]
    lines = []
    for key in _unknown_keys(data):
        at = key_line(text, key)
        lines.append(f"{path}{f':{at}' if at else ''}: unknown key {'.'.join(key)!r}"
                     f"{_did_you_mean(key)}")
    try:
        config = MachineConfig.model_validate(_without(data, _unknown_keys(data)))
    except ValidationError as e:
        for err, line in zip(e.errors(), describe_validation_error(e, None), strict=True):
            at = key_line(text, tuple(str(p) for p in err["loc"]))
            if err["type"] in ("path_type", "path_parsing"):  # Pydantic names a class here
                line = (f"key {'.'.join(map(str, err['loc']))!r}: got {err['input']!r}; give a "
                        "folder path as a string, e.g. cache_dir: \"/data/cache\"")
            lines.append(f"{path}{f':{at}' if at else ''}: {line}")
    if lines:
        raise UsageError(*lines, hint=f"fix {path}, or delete it to have the commented default "
                         "written again")
    base = path.parent
    return config.model_copy(update={
        "cache_dir": (base / config.cache_dir).resolve(),
        "results_dir": (base / config.results_dir).resolve(),
        "path": path, "from_environment": used,
    })
