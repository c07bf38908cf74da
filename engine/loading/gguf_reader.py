"""Parse a GGUF file's header: its metadata as Python values and where each tensor's bytes are.

The gguf package's `GGUFReader` builds a numpy view for every metadata item; a chat
model's vocabulary is 150-260 thousand strings plus as many merges, which takes it half a
minute. This parser reads the same format (version 2 and 3, little-endian) straight from
a memory map with `struct`, in well under a second, and can stop at the first keys
(`read_metadata(path, until=...)`), which is what listing a folder of models needs.

The layout: magic "GGUF", version (u32), tensor count and metadata count (u64); each
metadata entry is a key (u64 length + UTF-8), a value type (u32) and the value (strings
are u64 length + UTF-8, arrays an item type, a u64 count and the items); each tensor
entry is a name, a dimension count (u32), the dimensions (u64, fastest first), a type
(u32) and an offset (u64) into the data section, which starts at the next multiple of
`general.alignment` (32 by default) after the header.

Errors (not GGUF, an old version, cut short, nonsense lengths) are `ModelLoadError`s
naming the file. Not here: what the keys mean, dequantizing (engine/loading/gguf_file.py).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.errors import ModelLoadError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# GGUF value type -> struct format of one scalar (8: string, 9: array are read apart).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    """The header ends before the structure it describes does."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry: numpy-order shape (slowest dimension first), type, and where
    its bytes lie in the file (absolute offset; `num_bytes` is None for a type this
    gguf package does not know)."""

    name: str
    shape: tuple[int, ...]
    type_number: int
    offset: int
    num_bytes: int | None

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


class _Cursor:
    def __init__(self, data: mmap.mmap | bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise _Truncated
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value

    def string(self) -> str:
        length = self.take("<Q")
        end = self.at + length
        if end > len(self.data):
            raise _Truncated
        text = bytes(self.data[self.at:end]).decode("utf-8", errors="replace")
        self.at = end
        return text

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item == _STRING:
                return [self.string() for _ in range(count)]
            if item in _NUMPY:
                size = np.dtype(_NUMPY[item]).itemsize * count
                if self.at + size > len(self.data):
                    raise _Truncated
                values = np.frombuffer(self.data, dtype=_NUMPY[item], count=count, offset=self.at)
                self.at += size
                return values.tolist()
            return [self.value(item) for _ in range(count)]  # arrays of arrays
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        raise ValueError(f"unknown metadata value type {kind}")


@dataclass
class GGUFHeader:
    version: int
    fields: dict[str, Any]  # metadata key -> plain Python value (lists for arrays)
    tensors: list[TensorInfo]
    data_offset: int  # where the data section starts


def _tensor_bytes(type_number: int, elements: int) -> int | None:
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(type_number)]
    except (ValueError, KeyError):
        return None
    return elements // block * size


def _parse(data: mmap.mmap | bytes, path: Path, until: str | None) -> GGUFHeader:
    cursor = _Cursor(data)
    if bytes(data[:4]) != MAGIC:
        raise ModelLoadError(f"{path}: not a valid GGUF file (it does not start with 'GGUF')")
    cursor.at = 4
    version = cursor.take("<I")
    if version not in (2, 3):
        raise ModelLoadError(f"{path}: GGUF version {version} is not supported (only 2 and 3)")
    num_tensors, num_fields = cursor.take("<Q"), cursor.take("<Q")
    fields: dict[str, Any] = {}
    for _ in range(num_fields):
        key = cursor.string()
        fields[key] = cursor.value(cursor.take("<I"))
        if key == until:
            return GGUFHeader(version, fields, [], 0)
    tensors = []
    for _ in range(num_tensors):
        name = cursor.string()
        dims = [cursor.take("<Q") for _ in range(cursor.take("<I"))]
        type_number, offset = cursor.take("<I"), cursor.take("<Q")
        shape = tuple(reversed(dims))  # GGUF lists the fastest dimension first
        elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
        tensors.append(TensorInfo(name, shape, type_number, offset, _tensor_bytes(type_number, elements)))
    alignment = int(fields.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
    start = -(-cursor.at // alignment) * alignment
    tensors = [TensorInfo(t.name, t.shape, t.type_number, start + t.offset, t.num_bytes) for t in tensors]
    return GGUFHeader(version, fields, tensors, start)


def _problem(exc: Exception) -> str:
    return "cut short" if isinstance(exc, _Truncated) else str(exc)


def read_metadata(path: Path, until: str | None = None) -> GGUFHeader:
    """The header of the GGUF file at `path`; with `until`, only the metadata up to and
    including that key (or all of it if the key is absent), and no tensor entries."""
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(data, path, until)
    except (_Truncated, ValueError, OverflowError, MemoryError) as exc:
        raise ModelLoadError(f"{path}: not a valid GGUF file, truncated or corrupt ({_problem(exc)})") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read ({exc.strerror or exc})") from None


class GGUFFile:
    """A GGUF file open for reading: `fields`, `tensors`, and each tensor's raw bytes as a
    read-only view of a memory map (`raw(tensor)`). Every tensor is checked to lie within
    the file when it is opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as file:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            raise ModelLoadError(f"{path}: cannot read as a GGUF file ({exc})") from None
        try:
            header = _parse(self._map, path, None)
        except (_Truncated, ValueError, OverflowError, MemoryError) as exc:
            raise ModelLoadError(f"{path}: not a valid GGUF file, truncated or corrupt ({_problem(exc)})") from None
        self.version, self.fields, self.tensors = header.version, header.fields, header.tensors
        size = len(self._map)
        for tensor in self.tensors:
            end = tensor.offset + (tensor.num_bytes or 0)
            if end > size:
                raise ModelLoadError(
                    f"{path}: truncated or corrupt GGUF file (tensor {tensor.name} ends at byte {end}, the file has {size})"
                )

    def raw(self, tensor: TensorInfo) -> np.ndarray:
        """The tensor's bytes (uint8, read-only, backed by the file)."""
        return np.frombuffer(self._map, dtype=np.uint8, count=tensor.num_bytes or 0, offset=tensor.offset)
