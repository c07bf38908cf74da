"""int8 weight-only quantization of a model's linear layers, for CPU inference.

Each nn.Linear weight becomes int8 with one fp32 scale per output row (symmetric,
round-to-nearest); activations stay fp32. A single row (batch-1 decode) goes through the
multiply-and-sum compiled here by torch inductor, which reads each int8 weight once;
several rows use PyTorch's int8 weight-only kernel. Weights take a quarter of the memory.
That is the gain; speed is not: int8 decodes no faster than fp32 at batch 1 and far
slower with several requests, where fp32 has the C++ kernels (docs/performance.md,
Engine notes). Inference only: the quantized model cannot be trained or saved back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from engine.kernels.built_once import BuiltOnce, first_line

log = logging.getLogger(__name__)


def _row_product_int8(weight_int8: torch.Tensor, scale: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """int8 weight (out, in) with per-row scales times row (in,), as multiply-and-sum:
    inductor compiles it into one vectorized read of the int8 weight."""
    return (weight_int8.to(row.dtype) * row).sum(-1) * scale  # (out,)


def _try_compile_int8() -> Callable | None:
    """The compiled int8 kernel, run once on a tiny input to prove it builds; None if it does not."""
    kernel = torch.compile(_row_product_int8, dynamic=True)
    # Weights made outside inference mode, the row inside, as when the runner calls it:
    # dynamo guards on that difference, and a mismatch would mean compiling again.
    with torch.inference_mode(False):  # also when first called from inside the runner
        weight, scale = torch.ones(3, 5, dtype=torch.int8), torch.ones(3)
    try:
        with torch.inference_mode():
            kernel(weight, scale, torch.ones(5))
    # A capability probe, not real work: inductor reports a missing or broken compiler
    # through several exception types, and every one of them means "use the fallback".
    except Exception as error:  # noqa: BLE001
        log.warning("torch.compile is unavailable here (%s); int8 one-row products use PyTorch's kernel", first_line(error))
        return None
    return kernel


_int8_row_kernel: BuiltOnce[Callable] = BuiltOnce(_try_compile_int8)


def compiled_int8_row_kernel() -> Callable | None:
    """The compiled int8 one-row kernel, or None where torch.compile cannot build it (no
    C++ compiler, unsupported platform). Tried once per process; the first call is slow
    (seconds) even when inductor's disk cache has the kernel."""
    return _int8_row_kernel.get()


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        kernel = compiled_int8_row_kernel() if x.numel() == shape[-1] and x.device.type == "cpu" else None
        if kernel is not None:
            y = kernel(self.weight_int8, self.scale, x.reshape(-1).float().clone())  # (out,)
        else:
            y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]).float(), self.weight_int8, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape[:-1], self.out_features).to(x.dtype)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear in `model` (in place) by an Int8Linear; returns the model."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, Int8Linear(child))
    return model
