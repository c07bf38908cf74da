"""Errors the engine raises for bad input. Each message names the offending value."""


class EngineError(Exception):
    """Base class of the engine's user-facing errors."""


class ModelLoadError(EngineError):
    """A model path or file that cannot be loaded: missing, corrupt, unsupported."""


class InvalidRequestError(EngineError):
    """A generation request that cannot run: bad sampling values, too long a prompt."""


class DeviceError(EngineError):
    """A device name torch does not know, or a device this machine does not have."""
