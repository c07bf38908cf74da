"""The user-facing error type shared by every command, and how any error reads to a user.

Anything a user can get wrong (a bad path, a bad value, a corrupt file) is raised as a
`UserError` subclass carrying the offending value; the CLI prints it as one line and exits
non-zero, with no traceback. The lower packages have their own user-error base classes
(`EngineError`, `FeedbackError`, `TrainerError`); `user_error_types` lists all four, for
the CLI and the app alike.
"""

from __future__ import annotations


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
    return f"{type(error).__name__}: {error}"
