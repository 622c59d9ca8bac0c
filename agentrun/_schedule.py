"""When to poll a run: a schedule learned from how long the same agent's recent runs took.

Pure and clock-free. `PollSchedule.delay(elapsed)` answers "the run was created `elapsed`
seconds ago; how long until the next poll?". With no history it starts quickly and backs off
geometrically (a first poll after `cold_first` seconds, then at half the time spent so
far); once it has seen a few runs it sleeps until the earliest completion it has
seen, then polls at a fraction of the typical duration (so the lag between the run finishing
and the client noticing stays a small share of the run), and backs off again for overdue runs.
"""

from __future__ import annotations

import collections
import statistics

__all__ = ["PollSchedule"]


class PollSchedule:
    """Poll timing for one agent; `record` each finished run's duration, ask `delay`."""

    def __init__(
        self,
        *,
        window: int = 64,
        min_interval: float = 0.02,
        max_interval: float = 2.0,
        lag_fraction: float = 0.08,
        min_samples: int = 1,
        cold_first: float = 0.3,
    ) -> None:
        if not 0 < lag_fraction <= 1:
            raise ValueError("lag_fraction must be in (0, 1]")
        if not 0 < min_interval <= max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        self._samples: collections.deque[float] = collections.deque(maxlen=window)
        self._min = min_interval
        self._max = max_interval
        self._fraction = lag_fraction
        self._min_samples = min_samples
        self._cold_first = cold_first
        self._cache: tuple[float, float, float] | None = None

    def record(self, duration: float) -> bool:
        """Remember how long a run took from creation to its end (seconds).

        Returns True when this changed the plan materially (the first thing learned, or the
        typical duration moved by more than a quarter), so that runs sleeping on the old plan
        are worth re-planning.
        """
        if duration < 0:
            return False
        before = self._quantiles()[1] if len(self._samples) >= self._min_samples else None
        self._samples.append(duration)
        self._cache = None
        if len(self._samples) < self._min_samples:
            return False
        if before is None:
            return True
        after = self._quantiles()[1]
        return abs(after - before) > 0.25 * max(before, 1e-9)

    @property
    def samples(self) -> int:
        return len(self._samples)

    def _quantiles(self) -> tuple[float, float, float]:
        if self._cache is None:
            data = sorted(self._samples)
            n = len(data)
            low = data[max(0, int(n * 0.1) - 1)] if n >= 10 else data[0]
            high = data[min(n - 1, int(n * 0.9))]
            self._cache = (low, statistics.median(data), high)
        return self._cache

    def delay(self, elapsed: float) -> float:
        """Seconds to wait before the next poll of a run created `elapsed` seconds ago."""
        elapsed = max(0.0, elapsed)
        if len(self._samples) < self._min_samples:
            # Nothing learned yet: a first look soon, then back off by half the time spent so
            # far (at most ~50% lag, a handful of polls for a run of any length).
            return self._clamp(max(self._cold_first - elapsed, 0.5 * elapsed))
        low, median, high = self._quantiles()
        interval = self._clamp(self._fraction * median)
        if elapsed + interval < low:
            return low - elapsed
        if elapsed <= high * 1.25 + interval:
            return interval
        # Overdue: keep the lag under ~10% of the time the run has taken so far.
        return self._clamp(max(interval, 0.1 * elapsed))

    def _clamp(self, value: float) -> float:
        return min(self._max, max(self._min, value))
