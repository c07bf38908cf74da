"""int8 weight-only quantization of a model's linear layers, for CPU inference.

Each nn.Linear weight becomes int8 with one fp32 scale per output row (symmetric,
round-to-nearest); activations stay fp32. A single row (batch-1 decode) goes through the
compiled multiply-and-sum of engine/kernels/cpu_linear.py, which reads each int8 weight once;
several rows use PyTorch's int8 weight-only kernel. Weights take a quarter of the memory.
That is the gain; speed is not: on this project's CPU, int8 decodes 14 tokens/s at batch 1
(fp32: about 15) and 7 at 8 requests (fp32: 74). Inference only: the quantized model
cannot be trained or saved back.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.kernels.cpu_linear import compiled_int8_row_kernel


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
