"""Block quantization: the same numbers as the gguf package's Q8_0 and Q4_0, in the
kernel's layout, from our quantizer and from a file's blocks alike."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

from engine.kernels.quantize import (
    dequantize,
    from_gguf_blocks,
    pack,
    quantize_matrix,
    quantized_inputs,
    values_and_scales,
)

GGUF_TYPES = {"q8_0": GGMLQuantizationType.Q8_0, "q4_0": GGMLQuantizationType.Q4_0}


def _awkward_weights(rows: int, columns: int) -> torch.Tensor:
    """Random rows of different scales, with the cases rounding can trip on: an all-zero
    block, a tiny value, exact halves, ties for the largest magnitude."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(rows, columns, generator=generator) * torch.rand(rows, 1, generator=generator) * 3
    w[0, :32] = 0
    w[1, 5] = 1e-8
    w[2, :32] = torch.arange(32) - 16.0  # halves after scaling: 16 / (16 / 127) etc.
    w[3, :32] = torch.tensor([2.0, -2.0] * 16)  # the largest magnitude tied, negative second
    w[4, 32:64] = 0.5
    return w


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
@pytest.mark.parametrize("shape", [(12, 64), (9, 320), (5, 4096)])
def test_quantizing_gives_the_gguf_packages_blocks(quant, shape):
    w = _awkward_weights(*shape)
    ours = quantize_matrix(w, quant)
    raw = gguf_quants.quantize(w.numpy(), GGUF_TYPES[quant])
    theirs = from_gguf_blocks(raw, quant, *shape)
    assert torch.equal(ours.data, theirs.data)
    assert torch.equal(ours.scales.view(torch.int16), theirs.scales.view(torch.int16))
    expected = torch.from_numpy(gguf_quants.dequantize(raw, GGUF_TYPES[quant])).view(shape)
    assert torch.equal(dequantize(ours), expected)


@pytest.mark.parametrize("quant, step", [("q8_0", 127), ("q4_0", 8)])
def test_each_value_is_within_about_half_a_step_of_its_block(quant, step):
    w = torch.randn(7, 96)  # 96 columns: one pair and one block of padding
    matrix = quantize_matrix(w, quant)
    assert matrix.data.shape[1] == (128 if quant == "q8_0" else 64)  # padded to two pairs
    error = (dequantize(matrix) - w).abs().view(7, 3, 32)
    block_max = w.abs().view(7, 3, 32).amax(-1, keepdim=True)
    # Half a step, plus the scale's own rounding to fp16 (a relative 2^-11, times up to
    # 127 steps); Q4_0's positive end is a whole step short (7 steps of largest / 8).
    allowed = block_max / step * (1.0 if quant == "q4_0" else 0.5 + 127 * 2**-11) + 1e-6
    assert (error <= allowed).all()


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
def test_pack_and_unpack_are_inverse(quant):
    matrix = quantize_matrix(torch.randn(6, 200), quant)  # 200: not a whole pair
    q, scales = values_and_scales(matrix)
    again = pack(q, scales, quant, matrix.columns)
    assert torch.equal(again.data, matrix.data) and torch.equal(again.scales, matrix.scales)


def test_q4_values_pair_in_bytes_as_the_kernel_reads_them():
    # Value i of a pair in byte i's low nibble, value i + 32 in its high one, each as q + 8.
    q = torch.zeros(1, 64, dtype=torch.int8)
    q[0, 0], q[0, 32], q[0, 31], q[0, 63] = -8, 7, 3, -1
    matrix = pack(q, torch.ones(1, 2, dtype=torch.float16), "q4_0", 64)
    assert matrix.data[0, 0] == 0 | (15 << 4)
    assert matrix.data[0, 31] == 11 | (7 << 4)
    assert matrix.data[0, 1] == 8 | (8 << 4)


def test_inputs_are_rounded_per_block_of_32():
    x = torch.zeros(2, 40)
    x[0, :32] = torch.linspace(-1, 1, 32)
    x[0, 32:] = 100.0  # another block: does not change the first one's scale
    x[1, 3] = 0.3
    got = quantized_inputs(x)
    assert got.shape == x.shape and got.dtype == torch.float64
    step = 1.0 / 127
    assert torch.allclose(got[0, :32], torch.round(x[0, :32].double() / step) * step)
    assert torch.allclose(got[0, 32:], x[0, 32:].double())
    assert float(got[1, 3]) == pytest.approx(0.3) and got[1, :3].abs().sum() == 0


def test_gguf_blocks_of_a_matrix_too_narrow_for_a_pair_are_padded():
    w = torch.randn(3, 32)
    raw = gguf_quants.quantize(w.numpy(), GGMLQuantizationType.Q8_0)
    matrix = from_gguf_blocks(np.asarray(raw), "q8_0", 3, 32)
    assert matrix.data.shape == (3, 64) and matrix.scales.shape == (3, 2)
    assert torch.equal(dequantize(matrix), torch.from_numpy(gguf_quants.dequantize(raw, GGMLQuantizationType.Q8_0)))
