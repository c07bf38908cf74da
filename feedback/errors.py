"""Errors the feedback store raises for bad input. Each message names the offending value.

Every error here is a `FeedbackError`, which the CLI prints as one line. Failures of the
SQLite library itself that are not the user's doing (a full disk, say) are left as
`sqlite3` exceptions: they are bugs or environment problems, not bad input.
"""


class FeedbackError(Exception):
    """Base class of the feedback store's user-facing errors."""


class NotFoundError(FeedbackError):
    """A conversation, message, model version or training run id that does not exist."""


class InvalidFeedbackError(FeedbackError):
    """A rating, ranking or message that breaks the store's rules (bad value, wrong role, not siblings)."""


class DatabaseFileError(FeedbackError):
    """A database file that cannot be used: not SQLite, corrupt, or unreadable."""


class SchemaTooNewError(DatabaseFileError):
    """A database written by a newer chat-tui, whose migrations this version does not know."""


class ImportFormatError(FeedbackError):
    """A line of an import file that is not a preference pair; names the file and line number."""
