"""The one exception type the engine raises for bad input.

Callers (the HTTP layer, a training loop) need to know *which* argument was wrong and *where*,
so every check raises :class:`InputError` carrying the argument name, the first offending index
(in the caller's original, unflattened coordinates) and a human-readable reason.
"""

from __future__ import annotations


class InputError(ValueError):
    """An argument failed validation.

    Attributes:
        argument: name of the offending argument, e.g. ``"teacher_probs"``.
        reason: what is wrong with it, phrased for a human.
        index: first offending element as a tuple of ints, when the problem is element-wise.
    """

    def __init__(self, argument: str, reason: str, index: tuple[int, ...] | None = None) -> None:
        self.argument = argument
        self.reason = reason
        self.index = index
        where = f"{argument}[{', '.join(map(str, index))}]" if index is not None else argument
        super().__init__(f"{where}: {reason}")
