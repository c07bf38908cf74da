"""Faster fp32 linear layers for the engine's CPU forward passes through PyTorch modules.

PyTorch sends an fp32 `F.linear` on x86 to MKL, whose products read the weights far
slower than a plain sum over a large tensor does; decoding is bound by exactly those
weight reads. Two replacements:

- **1 to `FEW_ROWS_MAX` rows** (single-token prefills, the LM head of a prefill, decode of
  models the C++ decode step does not cover): the C++ kernel of
  engine/kernels/few_rows_gemm.py (bench/few_rows_gemm.py compares it with oneDNN).
- **more rows** (prefill, large batches), or where that kernel cannot be built: oneDNN's
  matmul, faster than MKL at these row counts. (Handing oneDNN a pre-blocked copy of each
  weight gained little, and only at small batches, for a second copy of every weight:
  not done.)

The measured figures behind these choices are in docs/performance.md, Engine notes.

`fast_linear(device, dtype)` gives a context in which `F.linear` takes these paths; the
runner enters it around its forward passes, and `warm_up` builds the kernel ahead of
the first one. Outside it, on other devices or dtypes, and
wherever autograd records, `F.linear` runs unchanged, so training is untouched. Weights
are read where they are, never copied, so a model trained between engine steps (PPO
rollouts) is always used as it is now.

Decode of the Llama-family models goes further (engine/kernels/llama_decode.py: the whole step in
C++, products included); this module serves what that does not cover (LoRA adapters,
PaLM, prefill).

Not here: choosing thread counts, quantized weights (engine/kernels/quantized_copy.py).
"""

from __future__ import annotations

import contextlib
import platform

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from engine.kernels import few_rows_gemm

# MKL's slow path is an x86 matter; elsewhere PyTorch's own choice of library stays.
_ONEDNN_FOR_SEVERAL_ROWS = platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()


# The most rows the few-row kernel takes. Its lead over oneDNN shrinks as rows grow and
# was gone at 32 rows, where the whole engine gained nothing from it either.
FEW_ROWS_MAX = 24


def _onednn_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return _ONEDNN_FOR_SEVERAL_ROWS and x.dim() >= 2 and x.is_contiguous() and weight.is_contiguous()


def cpu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for fp32 CPU tensors without autograd, by the faster path."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if 1 <= rows <= FEW_ROWS_MAX and x.is_contiguous() and weight.is_contiguous():
        y = few_rows_gemm.few_rows_linear(x.view(rows, -1), weight)  # None where unavailable
        if y is not None:
            if bias is not None:
                y += bias
            return y.view(*x.shape[:-1], weight.shape[0])
    if _onednn_usable(x, weight):
        return _onednn_linear(x.view(rows, -1), weight, bias).view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


def onednn_rows(rows: int) -> int:
    """How many rows a product of `rows` rows is handed to oneDNN as: rounded up to a step
    of an eighth of the power of two below it (at least 4), so at most 12.5% (or 3 rows)
    more work, and a few dozen sizes in all up to the largest prefill."""
    step = max(4, (1 << (rows.bit_length() - 1)) // 8)
    return -(-rows // step) * step


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's product of x (rows, in) with padding rows of zeros up to `onednn_rows`.

    oneDNN builds (JIT-compiles) and caches a primitive for every input shape it sees, and
    prefills pack all their prompts into one product of any length: unpadded, a long run
    of requests of mixed lengths grows the process by a primitive per length."""
    rows = x.shape[0]
    padded = onednn_rows(rows)
    if padded != rows:
        x = torch.cat([x, x.new_zeros(padded - rows, x.shape[1])])
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")[:rows]


def _takes_fast_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


class _FastLinearMode(TorchFunctionMode):
    """Sends each `F.linear` call made inside it to `cpu_linear` when that applies."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if _takes_fast_path(x, weight):
                return cpu_linear(x, weight, bias)
        return func(*args, **kwargs)


def _applies_to(device: torch.device, dtype: torch.dtype) -> bool:
    return torch.device(device).type == "cpu" and dtype == torch.float32


def fast_linear(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """A context that speeds up `F.linear` for an fp32 model on the CPU; a no-op otherwise."""
    return _FastLinearMode() if _applies_to(device, dtype) else contextlib.nullcontext()


def warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """Build the few-row kernel now, for a model that `fast_linear` applies to."""
    if _applies_to(device, dtype):
        few_rows_gemm.available()
