"""Starting from another run's weights (--init_from), checked before anything is written: all of
them as they are (the default: the same layers, the same shapes), or only the tensors under
some submodules (--init_modules=encoder), with prefixes renamed (--init_map=classifier.:head.);
the rest of the model starts fresh. --freeze_modules keeps submodules' weights as they are.
The run's phases that read the source and build the model before the run directory exists
are here too."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from expkit.data.base import DataSplits
from expkit.engine.experiment import BaseExperiment, ExperimentArgs
from expkit.engine.process import checkpoint_file
from expkit.errors import UsageError
from expkit.models.base import BaseModel
from expkit.training.checkpoint import BEST, LAST, load_checkpoint


@dataclass
class Initialisation:
    """What --init_from gives a model: the tensors to load (by the model's names), from which
    checkpoint, and which of the model's modules start fresh (those holding a tensor that is
    not loaded)."""

    checkpoint: Path
    weights: dict[str, torch.Tensor]
    fresh: list[str] = field(default_factory=list)
    run_id: str | None = None
    epoch: int | None = None

    def record(self) -> dict[str, Any]:
        """run.json's `init`: the parent run, the checkpoint, how many tensors, what is fresh."""
        return {"from": str(self.checkpoint), "run_id": self.run_id, "epoch": self.epoch,
                "tensors": len(self.weights), "fresh": self.fresh}

    def line(self, total: int) -> str:
        """The line a run prints when it starts from these weights."""
        where = f"{self.checkpoint.parent.parent}" if self.run_id else str(self.checkpoint)
        what = f"{self.checkpoint.name}" + (f", epoch {self.epoch}" if self.epoch else "")
        fresh = f"; fresh: {', '.join(self.fresh)}" if self.fresh else ""
        return f"init: {len(self.weights)} of {total} tensors from {where} ({what}){fresh}"


def renamed(weights: dict[str, torch.Tensor], pairs: list[tuple[str, str]]
            ) -> dict[str, torch.Tensor]:
    """`weights` with each name's first matching prefix `old` replaced by `new`."""
    out = {}
    for name, tensor in weights.items():
        for old, new in pairs:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        out[name] = tensor
    return out


def parse_map(items: list[str]) -> list[tuple[str, str]]:
    """--init_map's `old:new` prefix pairs."""
    pairs = []
    for item in items:
        old, sep, new = item.partition(":")
        if not sep or not old:
            raise UsageError(f"--init_map: got {item!r}; expected OLD:NEW prefixes, e.g. "
                             "classifier.:head.")
        pairs.append((old, new))
    return pairs


def _under(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def plan(model: torch.nn.Module, state: dict[str, Any], path: Path, source: Path,
         modules: list[str] | None, mapping: list[str] | None) -> Initialisation:
    """The tensors `model` takes from the checkpoint `state` (read from `path`, which
    --init_from=`source` named), checked: every one named exists in the model with the same
    shape, every module asked for exists on both sides; else one UsageError naming the first
    that does not fit. Without --init_modules and --init_map, the two must match exactly."""
    weights: dict[str, torch.Tensor] = state["model"]
    weights = renamed(weights, parse_map(mapping or []))
    own = model.state_dict()
    if modules:
        for module in modules:
            if not any(_under(n, module) for n in own):
                raise UsageError(f"--init_modules: this model has no module {module!r}",
                                 hint="its modules: " + ", ".join(_tops(own)))
            if not any(_under(n, module) for n in weights):
                raise UsageError(f"--init_modules: {path} has no module {module!r}",
                                 hint="its modules: " + ", ".join(_tops(weights))
                                 + " (--init_map renames them)")
        weights = {n: t for n, t in weights.items() if any(_under(n, m) for m in modules)}
    elif not mapping and set(weights) != set(own):
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise UsageError(f"--init_from={source}: its weights do not fit this model: "
                         + "; ".join(part for part in (
                             f"this model's {missing[0]} is not in it" if missing else "",
                             f"its {extra[0]} is not in this model" if extra else "") if part),
                         hint="load part of it: --init_modules=MODULE[,MODULE] (and rename "
                              "with --init_map=OLD.:NEW.)")
    for name, tensor in weights.items():
        if name not in own:
            raise UsageError(f"--init_from={source}: its {name} is not in this model",
                             hint="rename with --init_map=OLD.:NEW., or choose --init_modules")
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise UsageError(f"--init_from={source}: {name} is {tuple(tensor.shape)} there and "
                             f"{tuple(own[name].shape)} in this model")
    fresh = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in own if n not in weights))
    run_id = path.parent.parent.name if path.parent.name == "checkpoints" else None
    epoch = state.get("epoch") if isinstance(state.get("epoch"), int) else None
    return Initialisation(path, weights, fresh, run_id, epoch)


def _tops(names: Any) -> list[str]:
    return list(dict.fromkeys(n.split(".", 1)[0] for n in names))


def freeze(model: torch.nn.Module, modules: list[str] | None) -> int:
    """Keep the weights of `modules` as they are (no gradient, so not in the optimizer);
    returns how many parameters (numbers) that is."""
    if not modules:
        return 0
    names = dict(model.named_parameters())
    frozen = 0
    for module in modules:
        chosen = [p for n, p in names.items() if _under(n, module)]
        if not chosen:
            raise UsageError(f"--freeze_modules: this model has no parameters under {module!r}",
                             hint="its modules: " + ", ".join(_tops(names)))
        for parameter in chosen:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def initial_weights(args: ExperimentArgs, resume: dict[str, Any] | None
                    ) -> tuple[Path, dict[str, Any]] | None:
    """--init_from's checkpoint (its path and state), read before anything is written (a
    fresh run only)."""
    if args.trainer.init_from and resume is None:
        if not Path(args.trainer.init_from).exists():
            raise UsageError(f"--init_from={args.trainer.init_from}: no such file or run "
                             "directory; this run starts from its weights",
                             hint="restore that run's folder (or give another) to run this one")
        path = checkpoint_file(args.trainer.init_from,
                               BEST if args.trainer.init_checkpoint == "best" else LAST)
        return path, load_checkpoint(path)
    return None


def prepare_model(experiment: BaseExperiment[Any], data: DataSplits,
                  init_state: tuple[Path, dict[str, Any]] | None
                  ) -> tuple[BaseModel | None, Initialisation | None]:
    """The model, with --init_from's tensors in it (checked to fit: a usage error otherwise,
    before the run directory exists) and --freeze_modules' weights kept as they are. None
    when `build_model` fails: the run builds it again, and records why it failed."""
    t = experiment.args.trainer
    try:
        model = experiment.build_model(data.info)
    except Exception:  # built again inside the run, which records the failure
        return None, None
    init = None
    if init_state is not None and t.init_from is not None:
        path, state = init_state
        init = plan(model, state, path, t.init_from, t.init_modules, t.init_map)
        model.load_state_dict(init.weights, strict=False)
    freeze(model, t.freeze_modules)
    return model, init
