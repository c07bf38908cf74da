"""Errors the feedback store raises for bad input. Each message names the offending value."""


class FeedbackError(Exception):
    """Base class of the feedback store's user-facing errors."""
