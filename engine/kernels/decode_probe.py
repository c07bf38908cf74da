"""Checking the C++ decode step against PyTorch on a small random model, fp32 or quantized.

`probe(function, quant)` decodes two rows, their cache blocks out of order, one token at
a time into a second block, and compares every position's logits with a full forward
of the same model through PyTorch:

- fp32: the model's own forward, within 1e-4.
- q8_0 / q4_0: the forward of `reference_forward`, which does in float64 what the kernel
  does in integers: every product's input rounded per block of 32 as the kernel rounds
  it (engine/kernels/quantize.py `quantized_inputs`), times the dequantized weights.
  Mostly the two agree to float rounding, but an input that differs in its last bit (a
  sum taken in another order) can round to the next step, which moved a logit by 1% of
  the largest once in a few hundred positions; so the bound is 5% of the largest logit.
  A wrong layout or scale is off by the size of the logits themselves.

engine/kernels/llama_decode.py runs the probe once per process for each type it is asked
for and turns the kernel off for a type that fails. Not here: the kernel's wrapper.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from engine.config import ModelConfig
from engine.kernels.quantize import dequantize, quantized_inputs
from engine.kernels.quantized_copy import QuantizedCopy
from engine.models.llama import LlamaForCausalLM

# The probe's model: small, with q/k/v biases, grouped-query heads, and widths that are
# not whole pairs of quantization blocks (48, 80).
PROBE_CONFIG = ModelConfig(
    vocab_size=67, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
    num_key_value_heads=2, head_dim=16, qkv_bias=True, max_position_embeddings=64,
)


class _QuantizedProducts(TorchFunctionMode):
    """Every `F.linear` with a weight in `dequantized` as the quantized kernel computes it."""

    def __init__(self, dequantized: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.dequantized = dequantized

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and id(args[1]) in self.dequantized:
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            y = quantized_inputs(args[0]) @ self.dequantized[id(args[1])].double().T
            return (y if bias is None else y + bias.double()).float()
        return func(*args, **kwargs)


def reference_forward(model: LlamaForCausalLM, copy: QuantizedCopy | None) -> contextlib.AbstractContextManager:
    """A context in which the model's forward computes what the kernel computes with
    `copy`'s matrices (the model's own forward when `copy` is None)."""
    if copy is None:
        return contextlib.nullcontext()
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    dequantized = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            name = names[id(module.weight)]
            is_head = module is model.lm_head
            dequantized[id(module.weight)] = dequantize(copy.matrix(name, module.weight, is_head))
    return _QuantizedProducts(dequantized)


def probe_model(config: ModelConfig = PROBE_CONFIG, seed: int = 0) -> LlamaForCausalLM:
    """A random model; torch's global random state is left as it was."""
    generator = torch.Generator().manual_seed(seed)
    # Ordinary tensors even when called in inference mode, as a loaded model's are.
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):  # building draws from torch's global RNG
        model = LlamaForCausalLM(config).eval()
    with torch.inference_mode(False), torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model


def probe(step, quant: str = "none", config: ModelConfig = PROBE_CONFIG, block_size: int = 16) -> bool:
    """Whether `step(model, table, token_ids, positions, block_tables, k_cache, v_cache)`,
    the kernel's call, agrees with PyTorch (module docstring) on a probe model."""
    from engine.kernels.llama_decode import weight_table

    model = probe_model(config)
    copy = None if quant == "none" else QuantizedCopy(quant)
    generator = torch.Generator().manual_seed(1)
    length = min(block_size + 5, 2 * block_size)
    tokens = torch.randint(0, config.vocab_size, (2, length), generator=generator)
    tables = torch.tensor([[3, 0], [1, 2]])
    shape = (config.num_hidden_layers, 4, block_size, config.num_key_value_heads, config.head_dim)
    k_cache, v_cache = torch.zeros(shape), torch.zeros(shape)
    table = weight_table(model, copy)
    with torch.inference_mode():
        with reference_forward(model, copy):
            want = model(tokens)  # (2, T, V)
        tolerance = 1e-4 if copy is None else 0.05 * float(want.abs().max())
        for t in range(length):
            got = step(model, table, tokens[:, t], torch.tensor([t, t]), tables, k_cache, v_cache)
            if got is None or not torch.allclose(got, want[:, t], rtol=1e-4, atol=tolerance):
                return False
    return True
