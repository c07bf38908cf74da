"""int8 weight-only layers stay close to the fp32 model they came from."""

import torch
from torch import nn

from engine.quantize import Int8Linear, quantize_int8
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
