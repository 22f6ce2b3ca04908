"""The memory of requests in flight, estimated from their bodies and held within a budget.

Every byte of a body costs memory several times over while its request is served (the body, the
decoded tensors, the gradient, the response), so without a bound eight concurrent 254 MiB bodies
took 5.4 GiB. Each request reserves :data:`MEMORY_PER_BODY_BYTE` bytes per body byte as the body
arrives (all of a declared Content-Length at once) and gives them back when it has been answered; a
reservation beyond the budget is refused with :class:`~service.errors.Overloaded` (503, Retry-After)
instead of taking memory. The event loop is the only user, so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import Overloaded

#: Peak server memory per body byte of one request, measured by ``benchmarks/memory_in_flight.py``
#: (3.6 for a base64 KL request: the body, its decoded tensors, the gradient and the response).
MEMORY_PER_BODY_BYTE = 4


class Reservation:
    """The bytes one request holds."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, body_bytes: int) -> None:
        """Hold the memory of ``body_bytes`` more body bytes, or raise :class:`Overloaded` (holding nothing more)."""
        count = body_bytes * MEMORY_PER_BODY_BYTE
        self.budget.take(count)
        self.held += count


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
