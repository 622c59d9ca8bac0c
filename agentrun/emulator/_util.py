"""Small shared pieces: compact JSON, SSE frames, and the emulator's counters."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

__all__ = ["Stats", "dumps", "dumps_bytes", "sse_frame"]


def dumps(data: Any) -> str:
    """Compact one-line JSON (the SDK keeps only the last `data:` line of a frame).

    Text that cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"`` that a client
    sent as a JSON escape) is written as ASCII escapes instead, so it round-trips.
    """
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    return text


def dumps_bytes(data: Any) -> bytes:
    """`dumps` encoded as UTF-8 (always encodable)."""
    return dumps(data).encode("utf-8")


def sse_frame(event: str, data: Any) -> bytes:
    payload = data if isinstance(data, str) else dumps(data)
    return f"event: {event}\ndata: {payload}\n\n".encode("utf-8", "backslashreplace")


class Stats:
    """Counters behind `GET /_emulator/stats`."""

    def __init__(self) -> None:
        self.open_connections = 0
        self.reset()

    def reset(self) -> None:
        self.requests: dict[str, Counter[str]] = {}
        self.requests_total = 0
        self.runs_created = 0
        self.runs_by_status: Counter[str] = Counter()
        self.active_runs = 0
        self.peak_active_runs = 0
        self.connections_opened = 0
        self.peak_connections = self.open_connections

    def request(self, route: str, status: int | str) -> None:
        self.requests_total += 1
        self.requests.setdefault(route, Counter())[str(status)] += 1

    def connection_opened(self) -> None:
        self.connections_opened += 1
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)

    def connection_closed(self) -> None:
        self.open_connections = max(0, self.open_connections - 1)

    def run_status(self, old: str | None, new: str, *, old_active: bool, new_active: bool) -> None:
        if old is None:
            self.runs_created += 1
        else:
            self.runs_by_status[old] -= 1
            if self.runs_by_status[old] <= 0:
                del self.runs_by_status[old]
        self.runs_by_status[new] += 1
        if new_active and not old_active:
            self.active_runs += 1
            self.peak_active_runs = max(self.peak_active_runs, self.active_runs)
        elif old_active and not new_active:
            self.active_runs = max(0, self.active_runs - 1)

    def to_json(self, tokens_issued: int) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "requests": {route: dict(c) for route, c in sorted(self.requests.items())},
            "tokens_issued": tokens_issued,
            "runs_created": self.runs_created,
            "active_runs": self.active_runs,
            "runs_by_status": dict(sorted(self.runs_by_status.items())),
            "connections_opened": self.connections_opened,
            "peak_connections": self.peak_connections,
            "peak_active_runs": self.peak_active_runs,
        }
