"""Exception types.  Every error a user can provoke is one of these (or a built-in
``ValueError``/``TypeError`` subclass), with a message that says what was wrong and where.

The C++ core raises ``std::invalid_argument`` for bad input and ``std::runtime_error`` for
numerical failure; ``csrc/bindings.cpp`` maps its own subclasses onto the classes below.
"""

from __future__ import annotations

from typing import Any


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
    """Writing an output file failed (disk full, I/O error); ``errno`` is kept.  Saves are
    atomic: the previous file at that path, if any, is unchanged and no partial file is left
    behind (a routed trace file is cut back to its last whole line)."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class RefitError(TrimPomdpError, RuntimeError):
    """The refit EM did not converge; nothing was swapped."""


# -- evaluation ------------------------------------------------------------------------------
class FamilyUnavailableError(LookupError):
    """A registered family's module is not installed (for instance an optional extra).

    A ``LookupError`` like ``KeyError`` (an unknown family name), not a
    :class:`TrimPomdpError`: callers that skip unavailable families catch both."""


# -- serving ---------------------------------------------------------------------------------
class EndpointConfigError(TrimPomdpError, ValueError):
    """An endpoint is misconfigured (bad URL, missing API-key variable, bad numbers)."""


class EndpointError(TrimPomdpError, RuntimeError):
    """A request failed for good: a non-retryable status, or retries exhausted.

    Attributes
    ----------
    endpoint : str
        The endpoint's name (``EndpointConfig.name``).
    url : str
        The URL requested.
    status : int or None
        The last HTTP status received (None for timeouts and connection errors).
    attempts : int
        How many requests were made.
    """

    def __init__(
        self, message: str, *, endpoint: str, url: str, status: int | None, attempts: int
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.url = url
        self.status = status
        self.attempts = attempts


class ResponseTooLargeError(EndpointError):
    """A response body exceeded ``EndpointConfig.max_response_bytes`` (not retried: the
    connection is dropped as soon as the limit is crossed, so memory stays bounded)."""


class ResponseFormatError(TrimPomdpError, ValueError):
    """A server answered 200 with a body that does not have the documented shape (not JSON,
    a field missing, a value of the wrong type or out of range).

    Raised by the response parsers; :meth:`trim_pomdp.serving.http.JsonTransport.post`
    retries such a response like a 5xx and, when the retries are exhausted, raises a
    ResponseFormatError whose message ends with the last parser message and whose
    ``attempts`` says how many requests were made.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        url: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.url = url
        self.attempts = attempts


class ProblemFormatError(TrimPomdpError, ValueError):
    """A problem file is malformed; the message names the file and line."""


class OutputLockedError(TrimPomdpError, RuntimeError):
    """Another process holds the lock of this output (a second ``route`` on the same ``--out``)."""


class ResumeMismatchError(TrimPomdpError, ValueError):
    """The output already holds episodes under the same ids for different problems."""


class EpisodeError(TrimPomdpError, RuntimeError):
    """An episode could not finish (cheap model or PRM failed after its retries).

    Attributes
    ----------
    result : trim_pomdp.serving.records.EpisodeResult
        The partial episode (``status == "error"``), steps so far included.
    """

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result
