"""Block-quantized weight matrices for the C++ decode step: 8-bit (q8_0) and 4-bit (q4_0).

A matrix is quantized in blocks of 32 values along each row, one fp16 scale per block:
Q8_0 rounds each value to one of -127..127 steps of max|x| / 127, Q4_0 to one of -8..7
steps of (the value of largest magnitude) / -8. These are llama.cpp's Q8_0 and Q4_0
to the bit (the formulas of the gguf package's reference code), so a GGUF file's Q8_0 or
Q4_0 blocks and this module's quantization of the same weights are the same numbers, and
`from_gguf_blocks` takes a file's blocks as they are. What differs is only how the bytes
are laid out for the kernel (`cpu_quant.h`): rows padded to whole pairs of blocks, a
pair's values in order in one 64-byte vector (Q8: q + 128 as unsigned bytes; Q4: two
values per byte), and the scales in a separate (rows, blocks) array.

The layout is written in two places: quantize_weights.cpp quantizes into it, and `pack`
here takes a GGUF file's blocks into it (and `values_and_scales` back out, for checking);
tests hold both to the gguf package's own quantization.

Not here: which matrices of a model are quantized or when (engine/kernels/quantized_copy.py),
the product itself (cpu_quant.h), reading files.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch

from engine.kernels import native_library
from engine.kernels.quant_types import KINDS

BLOCK = 32  # values per scale
PAIR = 64  # values per kernel vector: two blocks



@dataclass
class QuantizedMatrix:
    """A (rows, columns) weight matrix in the kernel's layout (module docstring)."""

    quant: str  # "q8_0" or "q4_0"
    data: torch.Tensor  # uint8 (rows, pairs * 64) for q8_0, (rows, pairs * 32) for q4_0
    scales: torch.Tensor  # float16 (rows, pairs * 2)
    columns: int  # before padding

    @property
    def kind(self) -> int:
        return KINDS[self.quant]

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape[0], self.columns

    @property
    def nbytes(self) -> int:
        return self.data.numel() + 2 * self.scales.numel()


def _pairs(columns: int) -> int:
    return -(-columns // PAIR)


def _quantize_function():
    return native_library.function("quantize_weights", [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
    ])


def quantize_matrix(weight: torch.Tensor, quant: str) -> QuantizedMatrix:
    """An fp32 matrix (rows, columns) quantized as `quant` ("q8_0" or "q4_0"), by the
    engine's C++ library (quantize_weights.cpp): llama.cpp's reference arithmetic, in
    one pass over the weights on every thread. RuntimeError where the library cannot be
    built (then there is no C++ decode step to use the result either)."""
    function = _quantize_function()
    if function is None:
        raise RuntimeError("quantizing weights needs the engine's C++ library, which cannot be built here")
    weight = weight.detach().float().contiguous()
    rows, columns = weight.shape
    pairs = _pairs(columns)
    data = torch.empty(rows, pairs * (PAIR if quant == "q8_0" else PAIR // 2), dtype=torch.uint8)
    scales = torch.empty(rows, 2 * pairs, dtype=torch.float16)
    function(weight.data_ptr(), rows, columns, KINDS[quant], data.data_ptr(), scales.data_ptr(), torch.get_num_threads())
    return QuantizedMatrix(quant, data, scales, columns)


def pack(q: torch.Tensor, scales: torch.Tensor, quant: str, columns: int) -> QuantizedMatrix:
    """The kernel's layout from values q (rows, padded columns; -127..127 or -8..7) and
    fp16 scales (rows, padded columns / 32), padded to whole pairs of blocks."""
    rows, width = q.shape
    if width % PAIR:  # an odd number of blocks: one more, all zeros
        q = torch.cat([q, q.new_zeros(rows, PAIR - width % PAIR)], 1)
        scales = torch.cat([scales, scales.new_zeros(rows, (PAIR - width % PAIR) // BLOCK)], 1)
    if quant == "q8_0":
        data = (q.to(torch.int16) + 128).to(torch.uint8)
    else:
        nibbles = (q.to(torch.int16) + 8).to(torch.uint8).view(rows, -1, 2, PAIR // 2)  # (rows, pairs, half, 32)
        data = (nibbles[:, :, 0] | (nibbles[:, :, 1] << 4)).reshape(rows, -1)
    return QuantizedMatrix(quant, data.contiguous(), scales.contiguous(), columns)


def values_and_scales(matrix: QuantizedMatrix) -> tuple[torch.Tensor, torch.Tensor]:
    """`pack`'s inverse: (q int8 (rows, padded columns), scales fp16 (rows, blocks))."""
    rows = matrix.data.shape[0]
    if matrix.quant == "q8_0":
        q = (matrix.data.to(torch.int16) - 128).to(torch.int8)
    else:
        pairs = matrix.data.view(rows, -1, PAIR // 2)
        q = (torch.stack([pairs & 0x0F, pairs >> 4], 2).to(torch.int16) - 8).to(torch.int8).reshape(rows, -1)
    return q, matrix.scales


def dequantize(matrix: QuantizedMatrix) -> torch.Tensor:
    """The fp32 matrix (rows, columns) the quantized one stands for."""
    q, scales = values_and_scales(matrix)
    rows = q.shape[0]
    values = q.float().view(rows, -1, BLOCK) * scales.float()[:, :, None]
    return values.view(rows, -1)[:, : matrix.columns].contiguous()


def from_gguf_blocks(raw: np.ndarray, quant: str, rows: int, columns: int) -> QuantizedMatrix:
    """A GGUF tensor's Q8_0 or Q4_0 blocks (uint8, rows * columns / 32 blocks of 34 or 18
    bytes: an fp16 scale, then the values) in the kernel's layout, values unchanged."""
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows * columns // BLOCK, -1)
    scales = blocks[:, :2].copy().view(np.float16).reshape(rows, -1)
    if quant == "q8_0":
        q = blocks[:, 2:].view(np.int8)
    else:  # byte i: value i in the low nibble, value i + 16 in the high one
        packed = blocks[:, 2:]
        q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.int8) - 8
    q = torch.from_numpy(np.ascontiguousarray(q).reshape(rows, columns))
    return pack(q, torch.from_numpy(np.ascontiguousarray(scales)), quant, columns)


def quantized_inputs(x: torch.Tensor) -> torch.Tensor:
    """What the kernel multiplies in place of a product's input rows x (..., K): each block
    of 32 rounded to the nearest (halves to even) of -127..127 steps of its max|x| / 127,
    as float64 values (the kernel's sums of these times the weights are exact integers
    times the two scales)."""
    columns = x.shape[-1]
    padded = _pairs(columns) * PAIR
    blocks = torch.nn.functional.pad(x.float(), (0, padded - columns)).reshape(-1, BLOCK)
    scale = blocks.abs().amax(-1) / 127
    inverse = torch.where(scale == 0, 0.0, 1.0 / scale)
    values = torch.round(blocks * inverse[:, None]).double() * scale.double()[:, None]
    return values.reshape(*x.shape[:-1], padded)[..., :columns]
