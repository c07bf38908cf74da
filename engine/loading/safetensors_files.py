"""Read and write safetensors weight files, with clear errors for damaged ones.

Before handing a file to the safetensors library its header is checked against the file
size, so a truncated download is reported as "truncated" with the byte counts rather than
as a library traceback, and every tensor entry of the header is checked for a dtype, a
shape and byte offsets that agree. Sharded checkpoints are read through their
`model.safetensors.index.json`, whose files must lie inside the model folder. Writing goes
to a temporary name and is renamed into place; a failed write (a full disk) is an OSError
with its error number.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.errors import ModelLoadError
from engine.loading.validation import confined_file, inside_folder, shown

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
# Bits per element of the format's dtypes; a dtype missing here is left to the library.
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64}


def check_header(path: Path) -> dict:
    """The parsed header of a safetensors file; ModelLoadError if damaged or truncated.

    Every tensor entry is checked (a dtype, a shape of non-negative integers, two
    ordered byte offsets spanning exactly the shape's bytes) so that the safetensors
    library, and everything sized from the shapes, only sees well-formed entries."""
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
            if header_len > MAX_HEADER_BYTES:
                raise ModelLoadError(
                    f"{path}: corrupt safetensors file (a header of {header_len} bytes; the format allows "
                    f"{MAX_HEADER_BYTES})"
                )
            header = json.loads(f.read(header_len))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: corrupt safetensors header ({exc})") from None
    except RecursionError:
        raise ModelLoadError(f"{path}: corrupt safetensors header (JSON nested too deeply)") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_end = max((_entry_end(path, name, entry) for name, entry in header.items() if name != "__metadata__"),
                   default=0)
    expected = 8 + header_len + data_end
    if size < expected:
        raise ModelLoadError(f"{path}: truncated safetensors file (expected {expected} bytes, found {size})")
    return header


def _entry_end(path: Path, name: str, entry: object) -> int:
    """Where tensor `name`'s bytes end in the data section; ModelLoadError for a malformed entry."""
    where = f"{path}: corrupt safetensors header (tensor {shown(name)}"
    if not isinstance(entry, dict):
        raise ModelLoadError(f"{where} is {shown(entry)}, not an object)")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise ModelLoadError(f"{where} has dtype {shown(dtype)})")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise ModelLoadError(f"{where} has shape {shown(shape)}, not a list of non-negative integers)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)
            and offsets[0] <= offsets[1]):
        raise ModelLoadError(f"{where} has data_offsets {shown(offsets)}, not two ordered byte offsets)")
    bits = DTYPE_BITS.get(dtype)
    if bits is not None and math.prod(shape) * bits != (offsets[1] - offsets[0]) * 8:
        raise ModelLoadError(
            f"{where}: {dtype} {shape} needs {math.prod(shape) * bits // 8} bytes, its offsets span "
            f"{offsets[1] - offsets[0]})"
        )
    return offsets[1]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape by name, from the files' headers alone (no tensor data read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        for name, entry in check_header(file).items():
            if name != "__metadata__":
                shapes[name] = tuple(entry["shape"])
    return shapes


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a model directory, single or sharded; each must lie inside
    the directory (see `validation.confined_file`)."""
    single = directory / SINGLE_FILE
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index}: not a valid safetensors index ({exc})") from None
        except RecursionError:
            raise ModelLoadError(f"{index}: not a valid safetensors index (JSON nested too deeply)") from None
        if not isinstance(weight_map, dict):
            raise ModelLoadError(f"{index}: not a valid safetensors index (weight_map is not an object)")
        files = sorted({confined_file(directory, name, index) for name in weight_map.values()})
        for file in files:
            if not file.is_file():
                raise ModelLoadError(f"{index}: names shard {file.name}, which does not exist")
        return files
    if single.is_file():
        return [inside_folder(directory, single, directory)]
    others = sorted(directory.glob("*.safetensors"))
    if others:
        return [inside_folder(directory, file, directory) for file in others]
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
    try:
        save_file(plain, str(tmp), metadata={"format": "pt", **(metadata or {})})
    except SafetensorError as exc:
        tmp.unlink(missing_ok=True)
        raise _as_os_error(exc, path) from None
    os.replace(tmp, path)


def _as_os_error(exc: SafetensorError, path: Path) -> Exception:
    """The library reports a failed write (a full disk, say) as text with the OS error
    number in it; give it back as the OSError it was, so callers can say what happened."""
    found = re.search(r"os error (\d+)", str(exc))
    if found is None:
        return exc
    number = int(found.group(1))
    return OSError(number, os.strerror(number), str(path))
