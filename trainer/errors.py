"""Errors the trainer raises for bad input or a failed run. Messages name the bad value."""


class TrainerError(Exception):
    """Base class of the trainer's user-facing errors."""
