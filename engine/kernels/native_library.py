"""The engine's C++ CPU kernels as one shared library, built on first use and cached.

Sources: `few_rows_gemm.cpp` (a few-row product, engine/kernels/few_rows_gemm.py) and
`llama_decode.cpp` (a whole Llama decode step, engine/kernels/llama_decode.py), both on the
shared pieces in `cpu_kernels.h`. They are compiled with the system C++ compiler
(`$CXX`, else `g++`) into a library kept under the user's cache directory, keyed by the
sources, the compiler and the CPU (it is built with `-march=native`), and loaded with
ctypes. Building is atomic (a temporary file renamed into place), so a process never
loads another's half-written library.

`library()` returns the loaded library and `function(name, argtypes)` one of its
functions, or None where no compiler is found or the build fails, after saying so once
in the log. Not here: checking that a kernel gives right
answers (each wrapper probes its own), or choosing when to use one.
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

from engine.kernels.built_once import BuiltOnce, first_line

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
SOURCES = [_HERE / "few_rows_gemm.cpp", _HERE / "llama_decode.cpp", _HERE / "quantize_weights.cpp"]
HEADERS = [_HERE / "cpu_kernels.h", _HERE / "cpu_quant.h"]
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


def cached_path(compiler: str, source_dir: Path = _HERE) -> Path:
    """Where the library built from `source_dir`'s sources is kept: named by a hash of
    every source and header, the compiler's version, the flags and the CPU, so a change
    to any of them builds anew."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    texts = [(source_dir / path.name).read_text() for path in SOURCES + HEADERS]
    key = hashlib.sha256("\0".join([*texts, version, " ".join(FLAGS), _cpu_identity()]).encode())
    return cache_dir() / f"cpu_kernels-{key.hexdigest()[:16]}.so"


def build(compiler: str, source_dir: Path = _HERE) -> Path:
    """Compile the sources (or reuse a cached build); returns the library's path.
    `source_dir`: where the .cpp and .h files are (another version's, to compare builds)."""
    sources = [source_dir / path.name for path in SOURCES]
    target = cached_path(compiler, source_dir)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: another process never loads a half-written file.
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        command = [compiler, *FLAGS, *map(str, sources), "-o", partial]
        subprocess.run(command, capture_output=True, text=True, check=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _load() -> ctypes.CDLL | None:
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        log.warning("no C++ compiler found; the engine's C++ kernels are off (PyTorch's take their place)")
        return None
    try:
        return ctypes.CDLL(str(build(compiler)))
    except (OSError, subprocess.CalledProcessError) as error:
        log.warning("could not build the engine's C++ kernels (%s); PyTorch's take their place", first_line(error))
        return None


_library: BuiltOnce[ctypes.CDLL] = BuiltOnce(_load)


def library() -> ctypes.CDLL | None:
    """The built library, or None where it cannot be built here (tried once per process)."""
    return _library.get()


def function(name: str, argtypes: list) -> ctypes._CFuncPtr | None:
    """The library's `extern "C"` function `name`, returning void and taking `argtypes`;
    None where the library cannot be built here."""
    built = library()
    return None if built is None else bind(built, name, argtypes)


def bind(loaded: ctypes.CDLL, name: str, argtypes: list) -> ctypes._CFuncPtr:
    """`loaded`'s `extern "C"` function `name`, set up as returning void and taking `argtypes`."""
    found = getattr(loaded, name)
    found.restype = None
    found.argtypes = argtypes
    return found
