"""A memory budget shared by threads: how many bytes of large buffers may exist at once.

Decoding a photo briefly holds its full-size pixels (a 13000 x 13000 RGBA PNG is 676 MB, twice that while it
is turned into RGB); eight decoding threads that each do so at once can exhaust a machine. Threads that share
a `MemoryBudget` wait their turn instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MemoryBudget"]


class MemoryBudget:
    """`capacity` bytes that the threads sharing this budget may hold at once.

    `hold(amount)` waits until `amount` fits beside what the other threads hold; an amount larger than
    the whole budget waits until nothing else is held and then holds it all (its work runs alone).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._held = 0
        self._changed = threading.Condition()

    @property
    def held(self) -> int:
        """Bytes held right now."""
        with self._changed:
            return self._held

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        """Hold `amount` bytes (at most the capacity) for the `with` block, waiting until they fit."""
        share = min(max(amount, 0), self.capacity)
        with self._changed:
            self._changed.wait_for(lambda: self._held + share <= self.capacity)
            self._held += share
        try:
            yield
        finally:
            with self._changed:
                self._held -= share
                self._changed.notify_all()
