"""Read the history rows of an offline wandb run file (.wandb) with wandb's own protobuf."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from expkit.tracking.wandb import read_records


def read_wandb_history(path: Path) -> list[dict[str, Any]]:
    """Each wandb.log() row of the run, keys to values."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for data in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def read_wandb_run(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's config (as wandb.init received it) and its summary, as a run file has them."""
    from wandb.proto import wandb_internal_pb2

    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for data in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
        elif kind == "config":
            config |= {item.key: json.loads(item.value_json) for item in record.config.update}
        elif kind == "summary":
            summary |= {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.summary.update}
    return config, summary
