"""Exceptions that the command line reports as one line, without a traceback."""


class VaebenchError(Exception):
    """Base class of errors that are the user's to fix (bad input, missing data)."""


class ConfigError(VaebenchError, ValueError):
    """A study file, preset or config value that cannot be used."""


class DataUnavailableError(VaebenchError, FileNotFoundError):
    """A data set whose source cannot be found or fetched on this machine."""


class ChecksumError(VaebenchError):
    """A downloaded or cached file whose sha256 does not match the expected one."""


class TrainingDiverged(VaebenchError, FloatingPointError):
    """A loss became NaN or infinite during training."""
