"""The bytes of request bodies in flight: read, decoded and computed at once, within a budget.

Every byte of a body costs memory several times over while its request is served (the body, the
decoded tensors, the gradient, the response), so without a bound eight concurrent 254 MiB bodies
took 5.4 GiB. Each request reserves its body's bytes as they arrive (all of a declared
Content-Length at once) and gives them back when it has been answered; a reservation beyond the
budget is refused with :class:`~service.errors.Overloaded` (503, Retry-After) instead of queueing
memory. The event loop is the only user, so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import Overloaded


class Reservation:
    """The bytes one request holds."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, count: int) -> None:
        """Hold ``count`` more bytes, or raise :class:`Overloaded` (holding nothing more)."""
        self.budget.take(count)
        self.held += count


class ByteBudget:
    """At most ``limit`` bytes held by all requests at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> None:
        if self.used + count > self.limit:
            raise Overloaded(f"{self.used} bytes of request bodies are being served; {count} more would exceed the limit of {self.limit}")
        self.used += count

    @contextmanager
    def reservation(self) -> Iterator[Reservation]:
        """A request's reservation, given back whatever happens."""
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            self.used -= reservation.held
