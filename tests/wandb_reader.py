"""Read the history records of an offline wandb run file (.wandb) with wandb's own protobuf.

The file is LevelDB-log framed: a 7-byte header, then 32 KiB blocks of records, each with a
7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768


def read_records(path: Path) -> list[bytes]:
    """The raw protobuf payloads in a .wandb file."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(raw):
        if BLOCK - pos % BLOCK < 7:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        pending += raw[pos:pos + length]
        pos += length
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


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
