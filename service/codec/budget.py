"""The memory of requests in flight, estimated from their bodies and held within a budget.

Every byte of a body costs memory several times over while its request is served (the body, the
decoded tensors, the gradient, the response), so without a bound eight concurrent 254 MiB bodies
took 5.4 GiB. Each request reserves :data:`MEMORY_PER_BODY_BYTE` bytes per body byte as the body
arrives (all of a declared Content-Length at once) and gives them back when it has been answered; a
reservation beyond the budget is refused with :class:`~service.errors.Overloaded` (503, Retry-After)
instead of taking memory. The event loop is the only user, so no lock is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import BodyTooLarge, Overloaded

#: Peak server memory per body byte of one request, measured by ``benchmarks/memory_in_flight.py``
#: for a 100 MiB KL request: 1.75 in base64 (the body, then its decoded tensors; the body is let go
#: before the gradient is computed and the inputs before it is encoded), 1.74 in JSON (the body until
#: its numbers are parsed as float64, then those and the float32 tensors).
MEMORY_PER_BODY_BYTE = 2.5
#: Requests with bodies at least this large hand the heap's free memory back to the OS once answered
#: (:func:`distill.native.allocator.release_free_memory`): the freed blocks of a 100 MiB request
#: otherwise stay resident (163 MiB measured), while those of ordinary requests are worth reusing.
RELEASE_AFTER_BODY_BYTES = 32 << 20
#: The default budget in body limits: one largest request (2.5 limits) and room for smaller ones.
DEFAULT_INFLIGHT_BODIES = 4


class Reservation:
    """The bytes one request holds."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0
        self.body_bytes = 0

    def take(self, body_bytes: int) -> None:
        """Hold the memory of ``body_bytes`` more body bytes (holding nothing more on failure).

        Raises:
            BodyTooLarge: this request alone would be over the whole budget: it could never be admitted,
                so it is refused as too large (413), not to be retried (a client can send it in parts).
            Overloaded: the requests in flight leave too little room now (503, retry).
        """
        count = math.ceil(body_bytes * MEMORY_PER_BODY_BYTE)
        if self.held + count > self.budget.limit:
            limit = self.budget.limit
            raise BodyTooLarge(f"the body needs about {self.held + count} bytes in flight, over the server's in-flight limit of {limit}")
        self.budget.take(count)
        self.held += count
        self.body_bytes += body_bytes

    @property
    def large(self) -> bool:
        """Whether the body is large enough to release free memory after answering it."""
        return self.body_bytes >= RELEASE_AFTER_BODY_BYTES


class ByteBudget:
    """At most ``limit`` bytes held by all requests at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> None:
        if self.used + count > self.limit:
            raise Overloaded(f"requests in flight hold about {self.used} bytes; {count} more would exceed the limit of {self.limit}")
        self.used += count

    @contextmanager
    def reservation(self) -> Iterator[Reservation]:
        """A request's reservation, given back whatever happens."""
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            self.used -= reservation.held
