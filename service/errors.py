"""The service's domain errors: why a request was refused, in the words of the layer that found out.

The codec and the pipeline raise these (and the engine its own :class:`~distill.InputError`,
:class:`~distill.QueueFull` and :class:`~distill.DeviceMemoryError`); they carry what went wrong and
which field, never an HTTP status. :mod:`service.http.problems` alone maps each type to a status,
a problem type and headers.
"""

from __future__ import annotations


class Refused(Exception):
    """A request the service does not answer with a result.

    Attributes:
        detail: what is wrong, phrased for the client.
        field: the dotted path of the request field at fault, when one is.
        index: the offending element's position inside that field, when there is one.
    """

    def __init__(self, detail: str, *, field: str | None = None, index: tuple[int, ...] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.index = index


class BodyTooLarge(Refused):
    """The body exceeds the configured size limit (known from Content-Length or while streaming)."""


class TensorTooLarge(Refused):
    """A tensor has more elements than the configured limit."""


#: The type of a request-validation error for a tensor over the element limit: answered as
#: :class:`TensorTooLarge` is (413), with the tensor's whole path as its field.
TOO_LARGE = "tensor_too_large"


class MalformedBody(Refused):
    """The body is empty or not valid JSON."""


class NotAnObject(Refused):
    """The body is valid JSON but not an object."""


class TooManyKeys(Refused):
    """An object has more keys than any request object can (refused before its keys are looked up)."""


class Overloaded(Refused):
    """Taking this body would exceed the bytes the service reads and computes at once; retry shortly."""


class BodyTimeout(Refused):
    """The body did not arrive within the configured time (a stalled or very slow upload)."""


class ClientDisconnected(Refused):
    """The client went away before its body arrived; nobody reads the answer, but it is counted."""


class DuplicateKey(Refused):
    """An object names a key twice (parsers disagree on which wins, so neither is taken)."""


class NumberOutOfRange(Refused):
    """A JSON number beyond 64-bit integers and float64 (valid JSON, but no parser here holds it)."""


class UpgradeWithBody(Refused):
    """A body sent with an HTTP/1.1 upgrade offer (``Upgrade: h2c``, Java's HttpClient's default), which the
    server's HTTP parser takes for the new protocol's bytes: the body never reaches the app."""


class UnsupportedMediaType(Refused):
    """The body is not declared as JSON, or is encoded (Content-Encoding) in a way the service does not decode."""


class UnknownModel(Refused):
    """An Open Inference Protocol route names a model (a loss) the service does not have."""


class InvalidRequest(Refused):
    """The body is JSON but not the request the route takes (an Open Inference Protocol envelope error)."""


class NotRepresentable(Refused):
    """A result cannot be written in the requested encoding (non-finite values in JSON)."""


class NotReady(Refused):
    """The engine is warming up or shutting down."""


class Unauthorized(Refused):
    """The request lacks the configured API key."""
