"""Errors the engine raises for bad input. Each message names the offending value.

Failures of the disk under a write stay OSErrors (the CLI words them), made to name the
file the user asked for by `write_error`.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# Libraries that write with a count check (numpy's tofile: "N requested and M written")
# drop the error number; with less than this free, the reason is taken to be a full disk.
NEARLY_FULL_BYTES = 1 << 20


class EngineError(Exception):
    """Base class of the engine's user-facing errors."""


class ModelLoadError(EngineError):
    """A model path or file that cannot be loaded: missing, corrupt, unsupported."""


class InvalidRequestError(EngineError):
    """A generation request that cannot run: bad sampling values, too long a prompt."""


class DeviceError(EngineError):
    """A device name torch does not know, or a device this machine does not have."""


def write_error(exc: OSError, path: str | Path) -> OSError:
    """The OSError to report for a failed write of `path`: `exc`'s error number (ENOSPC
    when a library dropped it and the disk has no room left), with `path` as its file."""
    number = exc.errno
    if number is None:
        try:
            full = shutil.disk_usage(Path(path).parent).free < NEARLY_FULL_BYTES
        except OSError:
            full = False
        if not full:
            return exc
        number = errno.ENOSPC
    return OSError(number, os.strerror(number), str(path))
