"""Which thread asked for which tool call ids: how a plain OpenAI client's tool messages (the
whole history resent, no ``thread_id``) find the run that waits for them.

One memory per `AsyncClient`, so a call id handed out by one endpoint never resolves a thread
on another. Bounded: the most recent `size` call ids are kept. Thread-safe (the sync layer and
the proxy may share a client across threads' calls).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence

__all__ = ["ToolCallMemory"]


class ToolCallMemory:
    """Call id -> thread id, for the calls of runs that ended in ``requires_action``."""

    def __init__(self, size: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._size = size

    def __repr__(self) -> str:
        return f"<ToolCallMemory {len(self._items)}/{self._size}>"

    def remember(self, thread_id: str, call_ids: Sequence[str]) -> None:
        """Note that `thread_id`'s run asked for `call_ids` (the oldest are forgotten first)."""
        with self._lock:
            for call_id in call_ids:
                self._items[call_id] = thread_id
                self._items.move_to_end(call_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def thread_for(self, call_ids: Sequence[str]) -> str | None:
        """The one thread that asked for these calls, or None (unknown, or several threads)."""
        with self._lock:
            threads = {t for t in (self._items.get(c) for c in call_ids) if t is not None}
        if len(threads) == 1:
            return threads.pop()
        return None
