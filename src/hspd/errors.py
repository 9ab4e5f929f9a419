"""Error types that name what a user must fix (a file, a config key, a row, a model)."""


class HSPDError(Exception):
    """Base class: a problem with the user's input, reported before expensive work."""


class ConfigError(HSPDError):
    """The configuration is invalid; the message names the key path."""


class DataError(HSPDError):
    """A data file is missing, empty, or lacks a column; the message names the file."""


class ModelError(HSPDError):
    """A model or tokenizer cannot be used as asked; the message names the model."""


class DeviceError(HSPDError):
    """A job cannot compute where the config and the cluster said it would (a GPU job without usable CUDA)."""
