"""Exception types.  Every error a user can provoke is one of these (or a built-in
``ValueError``/``TypeError`` subclass), with a message that says what was wrong and where.

The C++ core raises ``std::invalid_argument`` for bad input and ``std::runtime_error`` for
numerical failure; ``csrc/bindings.cpp`` maps its own subclasses onto the classes below.
"""

from __future__ import annotations


class TrimPomdpError(Exception):
    """Base class of every error raised by trim_pomdp."""


class PomdpFormatError(TrimPomdpError, ValueError):
    """A ``.pomdp`` file (or string) could not be parsed.

    Attributes
    ----------
    filename : str
        The file (or ``"<string>"``).
    line : int
        1-based line number where the problem was found (0 if not tied to a line).
    """

    def __init__(self, message: str, filename: str = "<string>", line: int = 0) -> None:
        super().__init__(message)
        self.filename = filename
        self.line = line


class ModelValidationError(TrimPomdpError, ValueError):
    """Model arrays are inconsistent: wrong shape, non-finite, negative, or rows not summing
    to 1."""


class ZeroProbabilityObservationError(TrimPomdpError, ValueError):
    """A belief update met an observation that has probability zero under the belief."""


class PolicyFormatError(TrimPomdpError, ValueError):
    """A saved policy (``.npz``/JSON or SARSOP ``.policy``) is malformed or does not fit the
    model."""


class MemoryLimitError(TrimPomdpError, MemoryError):
    """The solver would exceed the configured memory limit."""


class NotFittedError(TrimPomdpError, ValueError, AttributeError):
    """An estimator was used before ``fit`` was called (scikit-learn convention)."""


class TraceFormatError(TrimPomdpError, ValueError):
    """A trace file or record is malformed.  The message names the file, line and field."""


class ScenarioError(TrimPomdpError, ValueError):
    """A simulation scenario is malformed.  The message names the file and the field."""


class RouterStateError(TrimPomdpError, RuntimeError):
    """The router was called out of order (e.g. ``step`` after a final step)."""


class InsufficientDataError(TrimPomdpError, ValueError):
    """Too few labelled examples to fit a model (e.g. a hidden state with too few steps)."""


class OutputPathError(TrimPomdpError, ValueError):
    """An output path (``--out``) cannot be written: its folder is missing or not writable,
    or the path is a folder.  Raised *before* any long computation, so nothing is lost."""


class OutputWriteError(TrimPomdpError, OSError):
    """Writing an output file failed (disk full, I/O error).  Saves are atomic: the previous
    file at that path, if any, is unchanged and no partial file is left behind."""
