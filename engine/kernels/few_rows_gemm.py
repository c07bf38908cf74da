"""The few-row product kernel of the engine's C++ library, checked once on a probe.

Batched decode multiplies 2-16 rows by every weight matrix per step, so it is bound by
streaming the weights from memory. oneDNN's and MKL's small-row products read them well
below what the memory delivers; the kernel (`cpu_kernels.h`) reads each weight block
once, reuses it from L1 for every row, and prefetches the next block, which makes those
products faster than oneDNN's (bench/few_rows_gemm.py; figures in docs/performance.md,
Engine notes).

The library is built by engine/kernels/native_library.py. If it cannot be built, or the kernel
gives a wrong answer on a probe, this says so once in the log and `few_rows_linear`
returns None: callers then use oneDNN.

Not here: deciding when to use it (engine/kernels/cpu_linear.py), autograd, other dtypes.
"""

from __future__ import annotations

import ctypes
import logging

import torch

from engine.kernels import native_library
from engine.kernels.built_once import BuiltOnce

log = logging.getLogger(__name__)


def _load() -> ctypes._CFuncPtr | None:
    """The library's product function, checked on a probe; None where it cannot be had."""
    function = native_library.function("few_rows_linear", [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int,
    ])
    if function is None:
        return None
    # Odd sizes reach every tile and tail of the kernel.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(11, 37, generator=generator)
    weight = torch.randn(29, 37, generator=generator)
    got = _call(function, x, weight)
    if not torch.allclose(got, x.double().mm(weight.double().t()).float(), rtol=1e-4, atol=1e-4):
        log.warning("the few-row product kernel gave a wrong answer on this machine; using oneDNN")
        return None
    return function


def _call(function, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    rows, inner = x.shape
    out = torch.empty(rows, weight.shape[0], dtype=torch.float32)
    # ctypes releases the GIL for the call; the kernel's OpenMP threads are torch's count.
    function(x.data_ptr(), rows, inner, weight.data_ptr(), weight.shape[0], out.data_ptr(), torch.get_num_threads())
    return out


_function: BuiltOnce[ctypes._CFuncPtr] = BuiltOnce(_load)


def available() -> bool:
    """Whether the kernel works on this machine; builds and checks it on the first call."""
    return _function.get() is not None


def few_rows_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """x (M, K) @ weight (N, K)^T for contiguous fp32 CPU tensors, or None when the kernel
    is unavailable here. The caller checks dtype, device and contiguity."""
    function = _function.get()
    return None if function is None else _call(function, x, weight)
