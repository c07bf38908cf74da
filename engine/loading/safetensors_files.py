"""Read and write safetensors weight files, with clear errors for damaged ones.

Before handing a file to the safetensors library its header is checked against the file
size, so a truncated download is reported as "truncated" with the byte counts rather than
as a library traceback. Sharded checkpoints are read through their
`model.safetensors.index.json`. Writing goes to a temporary name and is renamed into place.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.errors import ModelLoadError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def check_header(path: Path) -> dict:
    """The parsed header of a safetensors file; ModelLoadError if damaged or truncated."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelLoadError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise ModelLoadError(
                    f"{path}: corrupt or truncated safetensors file (header says {header_len} bytes, "
                    f"file has {size})"
                )
            header = json.loads(f.read(header_len))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)),
        default=0,
    )
    expected = 8 + header_len + data_end
    if size < expected:
        raise ModelLoadError(f"{path}: truncated safetensors file (expected {expected} bytes, found {size})")
    return header


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a model directory, single or sharded."""
    single = directory / SINGLE_FILE
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index}: not a valid safetensors index ({exc})") from None
        files = sorted({directory / name for name in weight_map.values()})
        for file in files:
            if not file.is_file():
                raise ModelLoadError(f"{index}: names shard {file.name}, which does not exist")
        return files
    if single.is_file():
        return [single]
    others = sorted(directory.glob("*.safetensors"))
    if others:
        return others
    found = ", ".join(sorted(p.name for p in directory.iterdir())[:8])
    raise ModelLoadError(f"{directory}: no model.safetensors or {INDEX_FILE} (found: {found or 'nothing'})")


def read_tensors(files: list[Path], device: str = "cpu", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors of the given files by name, each cast to `dtype` as it is read."""
    for file in files:
        check_header(file)
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device=device) as f:
                for name in f.keys():
                    tensor = f.get_tensor(name)
                    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                        tensor = tensor.to(dtype)
                    tensors[name] = tensor
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ModelLoadError(f"{file}: cannot read safetensors data ({exc})") from None
    return tensors


def write_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write one safetensors file via a temporary name; tensors are made contiguous CPU copies."""
    plain: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.data_ptr() in seen:  # safetensors refuses shared memory: store a copy
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        plain[name] = tensor
    tmp = path.with_name(path.name + ".partial")
    save_file(plain, str(tmp), metadata={"format": "pt", **(metadata or {})})
    os.replace(tmp, path)
