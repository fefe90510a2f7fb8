"""Reading W&B's local ``.wandb`` files (offline and online runs both write them).

A ``.wandb`` file is a LevelDB-style log of protobuf ``Record`` messages: a ``:W&B`` header,
then 32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type: 1 full,
2/3/4 first/middle/last). A run killed with SIGKILL may leave a file that ends early; what was
written whole is still read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def history_rows(path: Path) -> list[dict[str, Any]]:
    """The history rows (``run.log`` calls) recorded in one ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in _records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # a torn last record
            break
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def artifact_records(path: Path) -> list[dict[str, Any]]:
    """The artifacts logged in one ``.wandb`` file: name, type, aliases, file paths."""
    from wandb.proto import wandb_internal_pb2

    found = []
    for raw in _records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except Exception:
            break
        if record.WhichOneof("record_type") == "artifact":
            art = record.artifact
            found.append(
                {
                    "name": art.name,
                    "type": art.type,
                    "aliases": list(art.aliases),
                    "files": [e.path for e in art.manifest.contents],
                }
            )
    return found


def logged_epochs(wandb_dir: Path) -> set[int]:
    """Epochs whose record reached any ``.wandb`` file under ``wandb_dir``."""
    epochs: set[int] = set()
    for path in wandb_dir.glob("*run-*/run-*.wandb"):
        for row in history_rows(path):
            if "epoch/epoch" in row:
                epochs.add(int(row["epoch/epoch"]))
    return epochs


def _records(data: bytes, block: int = 32768) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        return
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):
            pos += left
            continue
        if pos + 7 + length > len(data):
            return
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield pending
            pending = b""
