"""Exceptions that the command line reports as one line, without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


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


def run_command(body: Callable[[], Any], prog: str = "vaebench") -> int:
    """Run a command's ``body`` and return its exit status (``body``'s result when it is an int, else 0).

    A user-facing error (:class:`VaebenchError`, or an OSError such as a missing file) is
    printed as one line, ``PROG: error: …``, with status 2 and no traceback; Ctrl-C gives 130,
    and output piped into ``head`` and the like ends quietly.
    """
    try:
        status = body()
    except BrokenPipeError:  # before OSError, its base class
        sys.stderr.close()
        return 0
    except (VaebenchError, OSError) as exc:
        # one line, always: a message quoting a plugin's or the system's text may hold newlines
        print(f"{prog}: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0
