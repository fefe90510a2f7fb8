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
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in h.item}
        for h in _parsed(path, "history")
    ]


def artifact_records(path: Path) -> list[dict[str, Any]]:
    """The artifacts logged in one ``.wandb`` file: name, type, aliases, file paths."""
    return [
        {
            "name": art.name,
            "type": art.type,
            "aliases": list(art.aliases),
            "files": [e.path for e in art.manifest.contents],
        }
        for art in _parsed(path, "artifact")
    ]


def logged_epochs(wandb_dir: Path) -> set[int]:
    """Epochs whose record reached any ``.wandb`` file under ``wandb_dir``."""
    epochs: set[int] = set()
    for path in _run_files(wandb_dir):
        for row in history_rows(path):
            if "epoch/epoch" in row:
                epochs.add(int(row["epoch/epoch"]))
    return epochs


def artifact_epochs(wandb_dir: Path, name: str) -> set[int]:
    """Epochs (alias ``epoch-<n>``) of the versions of artifact ``name`` that reached any
    ``.wandb`` file under ``wandb_dir``."""
    return {
        int(alias.split("-", 1)[1])
        for path in _run_files(wandb_dir)
        for record in artifact_records(path)
        if record["name"] == name
        for alias in record["aliases"]
        if alias.startswith("epoch-") and alias[6:].isdigit()
    }


def _run_files(wandb_dir: Path) -> list[Path]:
    return sorted(wandb_dir.glob("*run-*/run-*.wandb"))


def _parsed(path: Path, record_type: str) -> Iterator[Any]:
    """The ``record_type`` payloads (``history``, ``artifact``) of the whole records in ``path``."""
    from wandb.proto import wandb_internal_pb2

    for raw in _records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # a torn last record
            return
        if record.WhichOneof("record_type") == record_type:
            yield getattr(record, record_type)


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
