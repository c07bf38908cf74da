"""The user-facing error type shared by every command.

Anything a user can get wrong (a bad path, a bad value, a corrupt file) is raised as a
`UserError` subclass carrying the offending value; the CLI prints it as one line and exits
non-zero, with no traceback. Lower packages define their own subclasses of `ValueError`
(e.g. `engine.errors.ModelLoadError`); the CLI maps those too.
"""


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit status 1."""
