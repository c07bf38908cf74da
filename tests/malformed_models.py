"""Damaged copies of good model files, for the validation and fuzz tests.

A good tiny model directory comes from tests/tiny_models.py and its GGUF from the
project's own exporter; these functions copy them and change one thing: a config value,
a safetensors header entry, a sharded index, a GGUF metadata key (rewritten with gguf's
own reader and writer, keeping every other key and tensor as it was).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def copy_model_dir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_config(directory: Path, changes: dict[str, Any], file: str = "config.json") -> Path:
    """Set (or, for a value of `...`, delete) keys of the directory's config file."""
    path = directory / file
    config = json.loads(path.read_text()) if path.exists() else {}
    for key, value in changes.items():
        if value is ...:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return directory


def read_safetensors_header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def write_safetensors_header(path: Path, header: Any, body: bytes, raw_header: bytes | None = None) -> None:
    """Write a safetensors file with `header` (or exactly `raw_header`) before `body`."""
    encoded = raw_header if raw_header is not None else json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)


def rewrite_gguf(source: Path, target: Path, changes: dict[str, tuple[Any, GGUFValueType] | None],
                 tensor_changes: dict[str, np.ndarray] | None = None,
                 extra_tensors: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of a GGUF file (F32 tensors) with metadata keys set to (value, type) or, for
    None, removed; `tensor_changes` replaces tensors' values by name and `extra_tensors`
    are added (F32)."""
    reader = GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(target), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in changes:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), kind, sub_type=sub)
    for key, change in changes.items():
        if change is not None:
            value, kind = change
            sub = None
            if kind == GGUFValueType.ARRAY:
                sub = GGUFValueType.get_type(value[0]) if value else GGUFValueType.UINT32
            writer.add_key_value(key, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        values = (tensor_changes or {}).get(tensor.name)
        data = np.array(tensor.data) if values is None else np.asarray(values, dtype=np.float32)
        writer.add_tensor(tensor.name, data)
    for name, values in (extra_tensors or {}).items():
        writer.add_tensor(name, np.asarray(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
