"""A C++ kernel for fp32 products with a few rows (batched decode), built on first use.

Batched decode multiplies 2-16 rows by every weight matrix per step, so it is bound by
streaming the weights from memory. oneDNN's and MKL's small-row products read them at
only 9-12 GB/s on this project's CPU; the kernel in `few_rows_gemm.cpp` reads each
weight block once, reuses it from L1 for every row, and prefetches the next block, which
measured 1.6-2.1x faster than oneDNN on 1-16 rows of the default model's layer weights
(bench/few_rows_gemm.py).

The source is compiled here with the system C++ compiler (`$CXX`, else `g++`) into a
shared library cached under the user's cache directory, keyed by the source, the
compiler and the CPU (it is built with `-march=native`), and loaded with ctypes. If no
compiler is found, the build fails, or the library gives a wrong answer on a probe, this
says so once in the log and `few_rows_linear` returns None: callers then use oneDNN.

Not here: deciding when to use it (engine/cpu_linear.py), autograd, other dtypes.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import platformdirs
import torch

from engine.built_once import BuiltOnce, first_line

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("few_rows_gemm.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]

def cache_dir() -> Path:
    """Where built kernels are kept: $CHAT_TUI_KERNEL_CACHE, else the user cache dir."""
    return Path(os.environ.get("CHAT_TUI_KERNEL_CACHE") or Path(platformdirs.user_cache_dir("chat-tui")) / "kernels")


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(wanted))  # the first CPU's lines, once each


def _build(compiler: str) -> Path:
    """Compile the source (or reuse a cached build); returns the library's path."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), _cpu_identity()]).encode())
    target = cache_dir() / f"few_rows_gemm-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: another process never loads a half-written file.
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", partial], capture_output=True, text=True, check=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _load() -> ctypes.CDLL | None:
    """The built library, checked on a probe product; None where it cannot be had."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        log.warning("no C++ compiler found; using oneDNN for few-row products")
        return None
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.CalledProcessError) as error:
        log.warning("could not build the few-row product kernel (%s); using oneDNN", first_line(error))
        return None
    function = library.few_rows_linear
    function.restype = None
    function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                         ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
    # Odd sizes reach every tile and tail of the kernel.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(11, 37, generator=generator)
    weight = torch.randn(29, 37, generator=generator)
    got = _call(function, x, weight)
    if not torch.allclose(got, x.double().mm(weight.double().t()).float(), rtol=1e-4, atol=1e-4):
        log.warning("the few-row product kernel gave a wrong answer on this machine; using oneDNN")
        return None
    return library


def _call(function, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    rows, inner = x.shape
    out = torch.empty(rows, weight.shape[0], dtype=torch.float32)
    # ctypes releases the GIL for the call; the kernel's OpenMP threads are torch's count.
    function(x.data_ptr(), rows, inner, weight.data_ptr(), weight.shape[0], out.data_ptr(), torch.get_num_threads())
    return out


_library: BuiltOnce[ctypes.CDLL] = BuiltOnce(_load)


def available() -> bool:
    """Whether the kernel works on this machine; builds and checks it on the first call."""
    return _library.get() is not None


def few_rows_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """x (M, K) @ weight (N, K)^T for contiguous fp32 CPU tensors, or None when the kernel
    is unavailable here. The caller checks dtype, device and contiguity."""
    library = _library.get()
    return None if library is None else _call(library.few_rows_linear, x, weight)
