"""int8 weight-only layers stay close to the fp32 model they came from."""

import torch
from torch import nn

from engine.kernels.quantize import Int8Linear, compiled_int8_row_kernel, quantize_int8
from tiny_models import tiny_llama


def test_int8_linear_error_is_within_quantization_step():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32, bias=True)
    x = torch.randn(5, 64)
    q = Int8Linear(linear)
    # Each weight moves by at most half a step (scale / 2); bound the output error by that.
    bound = (x.abs() @ (q.scale[:, None].expand(32, 64) / 2).T) + 1e-5
    assert ((q(x) - linear(x)).abs() <= bound).all()


def test_quantized_model_keeps_greedy_predictions():
    model = tiny_llama(200, seed=0, hidden_size=64)
    ids = torch.randint(0, 200, (2, 16))
    with torch.no_grad():
        reference = model(ids)
        quantize_int8(model)
        quantized = model(ids)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    agreement = (reference.argmax(-1) == quantized.argmax(-1)).float().mean()
    assert agreement > 0.9
    assert (reference - quantized).abs().max() < 0.1 * reference.abs().max()


def test_int8_one_row_kernel_compiles_here():
    # CI machines have a C++ compiler, so the fast int8 path must really be in use there.
    assert compiled_int8_row_kernel() is not None


def test_int8_one_row_matches_its_several_row_kernel():
    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(96, 48))
    rows = torch.randn(4, 96)
    with torch.inference_mode():
        together = layer(rows)
        one_by_one = torch.cat([layer(row[None]) for row in rows])
    torch.testing.assert_close(one_by_one, together, rtol=1e-4, atol=1e-4)
