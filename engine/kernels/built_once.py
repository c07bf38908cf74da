"""Build once per process, or remember that building failed.

The engine's fast CPU paths each need something made at run time that a machine may not
allow: a C++ library (engine/kernels/native_library.py) and the kernels checked on it
(engine/kernels/few_rows_gemm.py, engine/kernels/llama_decode.py, once per weight type). `BuiltOnce` makes it on first use, in one
thread even when two engine threads ask at once, and keeps the result: the built thing,
or None when building failed, so a missing compiler costs one warning rather than one
per call. Not here: what is built, or the fallback a caller takes on None.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

NOT_TRIED = object()  # `BuiltOnce.result` before the first build


class BuiltOnce(Generic[T]):
    """`get(*args)` calls `build(*args)` the first time only, and returns what it returned
    then (None: building failed here). `result` is that value, or NOT_TRIED."""

    def __init__(self, build: Callable[..., T | None]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self.result: T | None | object = NOT_TRIED

    def get(self, *args) -> T | None:
        if self.result is NOT_TRIED:
            with self._lock:
                if self.result is NOT_TRIED:  # another thread may have built it meanwhile
                    self.result = self._build(*args)
        return self.result  # type: ignore[return-value]


def first_line(error: BaseException) -> str:
    """A one-line account of why a build failed: a failed command's stderr or the error's
    message, first line; the error's type where both are empty."""
    stderr = getattr(error, "stderr", None)
    text = (stderr if isinstance(stderr, str) and stderr.strip() else str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__
