"""The user-facing error type shared by every command, and how failures read as one line.

Anything a user can get wrong (a bad path, a bad value, a corrupt file) is raised as a
`UserError` subclass carrying the offending value; the CLI prints it as one line and exits
non-zero, with no traceback. The lower packages have their own user-error base classes
(`EngineError`, `FeedbackError`, `TrainerError`); `user_error_types` lists all four, for
the CLI and the app alike. `describe_os_error` words what the operating system refused (a
full disk, a read-only folder) the same way everywhere.
"""

from __future__ import annotations

import errno

# What each error number means to someone whose command just failed.
_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EFBIG: "the file is too large",
    errno.EIO: "input/output error",
    errno.EMFILE: "too many open files",
    errno.ENAMETOOLONG: "the name is too long",
}


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit status 1."""


def user_error_types() -> tuple[type[Exception], ...]:
    """Each package's user-error base class; their messages name the offending value.

    Imported on call, not with this module: `feedback.errors` brings the feedback package's
    records along, and every CLI run imports this module.
    """
    from engine.errors import EngineError
    from feedback.errors import FeedbackError
    from trainer.errors import TrainerError

    return (UserError, EngineError, FeedbackError, TrainerError)


def describe_error(error: BaseException) -> str:
    """One line for the user: a user error's own message, with the error's type for
    anything else (a bug, which the message alone would hide)."""
    if isinstance(error, user_error_types()):
        return str(error)
    if isinstance(error, OSError):
        return describe_os_error(error)
    return f"{type(error).__name__}: {error}"


def describe_os_error(exc: OSError) -> str:
    """One line naming the file and what the system refused, with the error's name
    (e.g. "/x/y: the disk is full (ENOSPC)")."""
    reason = _REASONS.get(exc.errno, exc.strerror or str(exc)) if exc.errno is not None else str(exc)
    code = errno.errorcode.get(exc.errno) if exc.errno is not None else None
    where = None if exc.filename is None else str(exc.filename)
    if where is not None and exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    text = f"{where}: {reason}" if where else reason
    return one_line(f"{text} ({code})" if code else text)


def one_line(text: str) -> str:
    """`text` with its line breaks turned into spaces: an error is printed as one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())
