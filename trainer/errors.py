"""Errors the trainer raises for bad input or a failed run. Messages name the bad value."""


class TrainerError(Exception):
    """Base class of the trainer's user-facing errors."""


class NotEnoughFeedbackError(TrainerError):
    """The snapshot holds too little data to train; the message says how much is needed."""


class TrainingDivergedError(TrainerError):
    """A loss became NaN or infinite; the run stops and nothing is activated."""


class ModelTooLargeError(TrainerError):
    """The estimated memory of a run exceeds what the device has."""


class TrainingCancelled(TrainerError):
    """The run was asked to stop (SIGTERM, or the launcher died); it is recorded as
    cancelled with its checkpoint kept, so the same command resumes it."""

    exit_code = 128 + 15  # as a process ended by SIGTERM
