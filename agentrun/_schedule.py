"""When to poll a run: a schedule learned per agent, and the runs of one agent polled as a group.

Pure and clock-free: every time is passed in (seconds on the driver's clock), so all of it is
tested by simulation, without an event loop or a network (`tests/test_schedule.py`).

**What it learns.** `PollSchedule.record(low, high)`: a run of the agent ended between `low`
and `high` seconds after its creation (the last answer that said it was active, the answer that
said it ended; a stream sees the end itself, so `low == high`). It keeps a window of the
`window` (16) most recently *created* runs (not the last to end: within a batch runs end in
order of their length, and keeping the last to end would keep only the longest), and from it
three figures: `low` (the 10th percentile of the lower ends, or the latest one if lower),
`typical` (the median) and `high` (the 90th percentile of the upper ends, or the latest if
higher). When the durations follow the runs' creation times (the service slowing down under a
burst: a least-squares fit explaining at least half the variance), the figures for a run are
taken about that trend, extrapolated no further than the runs it was fitted on. Only narrow
brackets (within `precision`, 6% of the run, plus the time a poll takes to be answered) from
probes (below) are learned: a follower polls once at the high end, so its narrow brackets come
only from runs longer than that, and learning them would bias the schedule long. Two
exceptions: the first thing learned (rough, replaced by the first narrow one) and a run that
had ended by a first poll at the low end (shorter than anything recent: the upper quarter of
its bracket is learned, so the next probes start lower).

**Probes and followers** (`PollGroup.join`). A **probe** polls from `low` every
`probe_fraction` (3%) of the typical run, and past it every 3% of the time taken (still narrow
enough to learn from, and fewer polls on long runs; well past `high`, every 10%, unless what is
known is only a lower bound), so its end is seen within a few percent: the schedule learns
from it and the group learns when the runs created at a given time end. Where the recent runs
took about the same time, a probe starts one of its steps before the age at which a probe
created before it, still going, was last seen active (`PollGroup.survived`): only the oldest
probe still going polls from `low`. Every run is a
probe while fewer than five runs are known and no probe is under way; after that, the first run
to join after at least `probe_every` (8) runs and `probe_gap` (2% of a typical run, at most
50 ms) of creation time since the last probe. The others are **followers**. Where the recent
runs took about the same time (their midpoints within 20% of the typical run), a follower polls
once, at `high`; it is woken to poll sooner when a run of the agent created after it (by more
than a `slack`: half the recent spread, doubled each time such a wake finds the run still
going) is seen ended (`PollGroup.finished`), since runs created together end in about the order
they were created; and it polls no sooner than a probe created before it was last seen active
at the same age (`PollGroup.survived`). Where durations vary more, a follower polls from `low`
every `lag_fraction` (10%) of the time taken, so its lag stays under ~10% of its own run.
Overdue runs (past `high`) are polled every 10% of the time taken.

**A burst far larger than what was learned** (`PollSchedule.lower_bound`). Each learned run
notes how many runs of the agent were being polled then (a streamed run: none but itself).
When a run joins while at least 16 are polled together and more than 4 times the most the
window was learned under (a lone warm-up, or `auto`'s and `acompletion()`'s first calls, which
stream, before a burst that polls), what is known becomes a lower bound: a service under load
takes longer, and trusting one unloaded run made the followers poll before the burst's runs
ended and then every 10% (4.5 polls a run in simulation). Followers then poll no sooner than
twice `high` (a probe's first narrow bracket re-plans them all), and that bracket replaces the
window, as after a cold start. A probe of the burst whose run ends within the learned `high`
disproves the bound: what was learned stands again and every sleeper re-plans to it (else a
burst no slower than its warm-up waited for twice `high` whenever its probes' first polls
found their runs already ended).

Each poll is sent early by
the recent time polls take to be answered (at most half a probe step, so that a queue the
group's own polls build cannot feed on itself). When what is known changes materially (the
first narrow bracket, the typical duration moving by a quarter), every sleeping run re-plans.

**The trade-off.** One poll per run and a small lag cannot both come from a schedule alone
unless every run's end is predicted to within the lag: the emulator's runs of one batch end
within ~±3% of each other, the real service's vary with the prompt from seconds to minutes. So
precision is bought from a few runs (probes, ~2 extra polls each, one per 8+ runs) and shared
with the others through the order of creation; where durations are steady, a batch costs about
3 requests a call with a lag of a few percent of the run (plus the service's answer time: under
a burst that saturates the service, its queue dominates the lag). Where they vary, the
followers fall back to their own 10% grid: lag ≤ ~10% of the run, `log(high / low) / log(1.1)`
polls. The costs: a lone run that is a probe polls ~2-5 times; the first runs of an agent are
probes; and a run much shorter than anything learned is first polled at `low` (its lag is
`low` minus its duration; the schedule then learns the shorter runs). With nothing learned, a
probe polls after `cold_first` (0.3 s) and then every 15% of the time spent (a bracket narrow
enough to start from), a follower after `8 * cold_first` and then every 50%: a batch that
starts cold waits for its first probe to end, learns, and re-plans.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import statistics
import weakref
from typing import NamedTuple

__all__ = ["PollGroup", "PollSchedule", "PollTicket"]

#: A planned poll this close (seconds) is due now.
_DUE = 1e-3


class _Sample(NamedTuple):
    low: float
    high: float
    created: float | None = None
    #: Runs of the agent being polled when it was learned (itself included).
    load: int = 1


class _Trend(NamedTuple):
    mean_created: float
    mean_duration: float
    slope: float
    last: float
    #: The 10th percentile of the lower ends and the 90th of the upper ends, about the trend.
    low: float
    high: float
    #: The 10th-90th percentile range of the midpoints about the trend.
    jitter: float


class PollSchedule:
    """Poll timing for one agent: `record` how long finished runs took, ask `next_poll`.

    Times are seconds since the run's creation. `min_interval` and `max_interval` bound the
    time between two polls of a run (not the first sleep, which may be as long as runs take);
    `lag_fraction` is a follower's grid step and overdue back-off, `probe_fraction` a probe's
    step, both as shares of the run; `precision` the widest bracket (as a share of the run)
    learned from; `cold_first` the first poll with nothing learned. Raises `ValueError` for
    settings outside their ranges.
    """

    def __init__(
        self,
        *,
        window: int = 16,
        min_interval: float = 0.02,
        max_interval: float = 5.0,
        lag_fraction: float = 0.1,
        probe_fraction: float = 0.03,
        precision: float = 0.06,
        cold_first: float = 0.3,
    ) -> None:
        if not 0 < lag_fraction <= 1:
            raise ValueError("lag_fraction must be in (0, 1]")
        if not 0 < probe_fraction <= lag_fraction:
            raise ValueError("probe_fraction must be in (0, lag_fraction]")
        if not 0 < min_interval <= max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        if window < 1 or precision <= 0 or cold_first <= 0:
            raise ValueError("window, precision and cold_first must be positive")
        # In order of recording; when full, the run created first goes (see `_keep`).
        self._samples: list[_Sample] = []
        self._window = window
        self._min = min_interval
        self._max = max_interval
        self._fraction = lag_fraction
        self._probe = probe_fraction
        self._precision = precision
        self._cold_first = cold_first
        self._cache: tuple[float, float, float] | None = None
        #: A follower polls once at `high` while `high <= _one_poll * low`.
        self._one_poll = 1.2
        #: The first sample is provisional when wide (or all are, as a lower bound): dropped
        #: once a narrow one arrives.
        self._provisional = False
        #: While provisional, a follower's first poll is at this multiple of `high`.
        self._bound = 2.0
        #: What is known is a lower bound (`lower_bound`), not a rough first sample.
        self._bounded = False
        #: The 10th-90th percentile range of the recent durations' midpoints (seconds).
        self._jitter = 0.0
        self._slack_share = 0.5
        #: Below this many samples, the spread is assumed (see `estimate`).
        self._few = 5
        self._trend_cache: tuple[_Trend | None] | None = None

    # -- learning -------------------------------------------------------------------------

    def record(
        self,
        low: float,
        high: float | None = None,
        *,
        created: float | None = None,
        tolerance: float = 0.0,
        follower: bool = False,
        load: int = 1,
    ) -> bool:
        """A run ended between `low` and `high` seconds after its creation (`high` defaults to
        `low`: the end was seen as it happened).

        Returns True when this changed the plan materially (the first thing learned, or the
        typical duration moved by more than a quarter): runs sleeping on the old plan should
        re-plan. A bracket too wide to learn from is ignored (False), and so is a
        `follower`'s unless it ended by the low estimate: a follower polls once at the high
        end, so its narrow brackets come only from runs longer than that (learning them would
        bias the schedule long). `load`: how many runs of the agent were being polled then
        (itself included; see `lower_bound`).
        """
        high = low if high is None else high
        low = max(0.0, low)
        if high <= 0 or low > high:
            return False
        est = self.estimate()
        narrow = high - low <= max(self._precision * high, 2 * self._min) + tolerance
        if (
            self._bounded
            and not follower
            and est is not None
            and (high <= est[2] * (1 + self._probe) + tolerance)
        ):
            # A probe of the burst ended within the learned high end: the burst does not take
            # longer, so what is known was not only a lower bound. Back to it (with this run's
            # bracket if narrow); every sleeper re-plans from twice the high end to it.
            self._bounded = self._provisional = False
            if narrow:
                self._keep(_Sample(low, high, created, load))
            self._cache = None
            self._trend_cache = None
            return True
        if est is None:
            # The first thing learned, however rough; a run seen ended at its first poll says
            # only "before `high`": take the upper half. Kept until something narrower.
            sample = _Sample(max(low, 0.5 * high), high, created, load)
            self._provisional = not narrow
        elif narrow and not follower:
            if self._provisional:
                # Something precise replaces the rough first bracket: every sleeper re-plans.
                self._samples.clear()
                self._provisional = self._bounded = False
                self._keep(_Sample(low, high, created, load))
                self._cache = None
                self._trend_cache = None
                return True
            sample = _Sample(low, high, created, load)
        elif low <= 0 and high <= est[0] * (1 + self._probe) + tolerance:
            # Ended by the first poll, at the low estimate: shorter than anything recent (a
            # shorter prompt, or the service got faster). Learn the upper quarter: the next
            # probes start lower, and so on until they bracket the end.
            sample = _Sample(max(low, 0.75 * high), high, created, load)
        else:
            return False
        self._keep(sample)
        self._cache = None
        self._trend_cache = None
        if est is None:
            return True
        after = self.estimate()
        assert after is not None
        return abs(after[1] - est[1]) > 0.25 * est[1]

    def _keep(self, sample: _Sample) -> None:
        """Add `sample`; beyond the window, forget the run created first (not the run that
        ended first: within a batch, runs end in order of their length, and forgetting the
        first to end would leave only the longest)."""
        self._samples.append(sample)
        if len(self._samples) > self._window:
            oldest = min(
                range(len(self._samples)),
                key=lambda i: (self._samples[i].created is not None, self._samples[i].created or 0),
            )
            del self._samples[oldest]

    @property
    def samples(self) -> int:
        """How many brackets the window holds."""
        return len(self._samples)

    @property
    def learned_load(self) -> int:
        """The most runs of the agent polled together while the window's runs were learned
        (0 with nothing learned)."""
        return max((s.load for s in self._samples), default=0)

    @property
    def provisional(self) -> bool:
        """Whether what is known is only a first guess or a lower bound, replaced as a whole by
        the first narrow bracket (see `lower_bound`)."""
        return self._provisional

    def lower_bound(self) -> None:
        """Take what is known as a lower bound: learned under far less load than now (a lone
        run, or a streamed one, before a large burst of polled runs that the service takes
        longer over). Followers then poll no sooner than twice the high end (the group wakes
        them when a probe sees its run end), and the first narrow bracket replaces the window
        and re-plans every sleeper, as after a cold start."""
        if self._samples and not self._provisional:
            self._provisional = self._bounded = True
            self._cache = None
            self._trend_cache = None

    def estimate(self) -> tuple[float, float, float] | None:
        """(low, typical, high) seconds from the recent runs, or None with nothing learned."""
        if self._cache is None and self._samples:
            data = self._samples
            n = len(data)
            lows = sorted(s.low for s in data)
            highs = sorted(s.high for s in data)
            latest = data[-1]
            low = min(lows[int(0.1 * (n - 1))], latest.low)
            high = max(highs[math.ceil(0.9 * (n - 1))], latest.high)
            mids = sorted((s.low + s.high) / 2 for s in data)
            typical = statistics.median(mids)
            self._jitter = mids[math.ceil(0.9 * (n - 1))] - mids[int(0.1 * (n - 1))]
            self._trend_cache = None  # fitted when first needed (`_trend`)
            if n < self._few:
                # A few samples say little of the spread: assume at least a probe step or
                # two either side.
                low = min(low, typical * (1 - 2 * self._probe))
                high = max(high, typical * (1 + 2 * self._probe))
            low = max(low, self._min)
            self._cache = (low, max(typical, low), max(high, low))
        return self._cache

    def _trend(self) -> _Trend | None:
        """The trend of the current window (see `_fit`), fitted once per window."""
        if self._trend_cache is None:
            self._trend_cache = (self._fit(self._samples),)
        return self._trend_cache[0]

    @staticmethod
    def _fit(data: list[_Sample]) -> _Trend | None:
        """Duration against creation time, when the recent runs show a clear trend (the
        service slowing down or speeding up under load: R² >= 0.5 over at least 4 runs)."""
        points = [s for s in data if s.created is not None]
        if len(points) < 4:
            return None
        n = len(points)
        cs = [s.created for s in points if s.created is not None]
        ds = [(s.low + s.high) / 2 for s in points]
        mc, md = sum(cs) / n, sum(ds) / n
        scc = sum((c - mc) ** 2 for c in cs)
        sdd = sum((d - md) ** 2 for d in ds)
        scd = sum((c - mc) * (d - md) for c, d in zip(cs, ds, strict=True))
        if scc <= 0 or sdd <= 0 or scd * scd < 0.5 * scc * sdd:
            return None
        slope = scd / scc
        lows = sorted(s.low - (md + slope * (c - mc)) for s, c in zip(points, cs, strict=True))
        highs = sorted(s.high - (md + slope * (c - mc)) for s, c in zip(points, cs, strict=True))
        mids = sorted(d - (md + slope * (c - mc)) for c, d in zip(cs, ds, strict=True))
        return _Trend(
            mc,
            md,
            slope,
            max(cs),
            lows[int(0.1 * (n - 1))],
            highs[math.ceil(0.9 * (n - 1))],
            mids[math.ceil(0.9 * (n - 1))] - mids[int(0.1 * (n - 1))],
        )

    def _estimate_for(self, created: float | None) -> tuple[float, float, float] | None:
        """`estimate()`, or for a run created at `created` (driver clock) while the recent runs
        show a trend, the trend's prediction for it (extrapolated no further ahead than the
        runs it was fitted on span) with their spread around the trend."""
        est = self.estimate()
        trend = self._trend()
        if est is None or trend is None or created is None:
            return est
        ahead = min(created, trend.last + (trend.last - trend.mean_created))
        typical = trend.mean_duration + trend.slope * (ahead - trend.mean_created)
        low = max(self._min, typical + trend.low)
        return low, max(low, typical), max(low, typical + trend.high)

    def steady(self, created: float | None = None) -> bool:
        """Whether the recent runs (about the trend, for a run created at `created`) took
        about the same time (see `_steady`)."""
        est = self._estimate_for(created)
        return est is not None and self._steady(est[1], est[2], est[0])

    def _steady(self, typical: float, high: float, low: float) -> bool:
        """Whether the recent runs took about the same time (their midpoints within 20% of
        the typical run, about the trend if there is one): then a follower polls once, at the
        high end."""
        if len(self._samples) < self._few:
            return high <= self._one_poll * low
        trend = self._trend()
        jitter = trend.jitter if trend is not None else self._jitter
        return jitter <= (self._one_poll - 1) * typical

    def slack(self) -> float:
        """How much later than a run another must have been created for its end to say the
        first has ended too (seconds): half the recent spread of durations (a run's own jitter
        against another's), or a probe step while only a rough first bracket is known."""
        est = self.estimate()
        if est is None:
            return math.inf
        if self._provisional:
            return max(self._min, self._probe * est[1])
        return max(self._min, self._slack_share * self._jitter)

    # -- planning -------------------------------------------------------------------------

    def next_poll(self, after: float, *, probe: bool, created: float | None = None) -> float:
        """Seconds after creation of the next poll of a run last polled `after` seconds after
        creation (0: not polled yet), as a probe or as a follower (see the module docstring)."""
        after = max(0.0, after)
        earliest = after + self._min
        est = self._estimate_for(created)
        if est is None:
            if probe:
                t = max(self._cold_first, after * 1.15)
            else:
                t = max(8 * self._cold_first, after * 1.5)
            return max(earliest, min(t, after + self._max))
        low, typical, high = est
        if probe:
            # Every 3% of the typical run, and past it of the time taken (a bracket that
            # narrow is learned, and the polls thin out as a long run goes on); well past the
            # high end, every 10% (an outlier), unless the high end is only a lower bound.
            step = self._probe * max(typical, after)
            if after > 1.25 * high and not self._provisional:
                step = max(step, self._fraction * after)
            t = max(low, after + min(self._max, max(self._min, step)))
        else:
            # A follower: the first poll at or after `base`.
            g = 1.0 + self._fraction
            base = max(earliest, low)
            if self._bounded and after < self._bound * high:
                # A lower bound (`lower_bound`): wait for a probe to learn the runs' length
                # (which re-plans every sleeper), polling late if none does. (A rough first
                # guess says "before `high`": followers poll there, as below.)
                t = self._bound * high
            elif base < high and self._steady(typical, high, low):
                # Steady durations: one poll at the high end (the group wakes it sooner).
                t = high
            else:
                # Varied durations: from the low end, every 10% of the time taken.
                k = math.ceil(math.log(base / low) / math.log(g) - 1e-9)
                t = low * g**k
        if after >= low:
            t = min(t, after + self._max)
        return max(t, earliest)

    def delay(self, elapsed: float, *, probe: bool = True) -> float:
        """Seconds to wait before the next poll of a run created `elapsed` seconds ago and last
        polled now (`next_poll(elapsed) - elapsed`)."""
        elapsed = max(0.0, elapsed)
        return self.next_poll(elapsed, probe=probe) - elapsed


class PollTicket:
    """One run's place in its `PollGroup`: its role, when it was created and last polled."""

    __slots__ = (
        "__weakref__",
        "_gen",
        "_key",
        "_sent",
        "_woken",
        "created",
        "group",
        "last",
        "misses",
        "probe",
        "token",
    )

    def __init__(self, group: PollGroup) -> None:
        self.group = group
        #: Creation time on the driver's clock (None until `PollGroup.join`).
        self.created: float | None = None
        #: Probe (polls finely) or follower (see the module docstring); a probe until joined.
        self.probe = True
        #: Seconds after creation of the last answer to a poll (0: none yet).
        self.last = 0.0
        #: Wakes that found the run still going.
        self.misses = 0
        #: What the driver waits on while the run sleeps (None while awake).
        self.token: object | None = None
        self._woken = False
        self._gen = 0
        self._key = math.inf
        self._sent: float | None = None

    def delay(self, elapsed: float) -> float:
        """Seconds from `elapsed` (since creation) until the next poll should be sent (0 if
        due): the machine's `poll_delay`. The schedule plans when the answer should come (a
        poll sees the run as it is when the service answers), so the poll is sent earlier by
        the group's recent answer time."""
        schedule = self.group.schedule
        nxt = schedule.next_poll(self.last, probe=self.probe, created=self.created)
        est = schedule.estimate()
        if est is None:
            return max(0.0, nxt - elapsed)
        if self.created is not None and schedule.steady(self.created):
            # A probe created before this run was still going at this age: so is this run (a
            # probe too, from one of its steps before, so that its bracket stays narrow).
            seen = self.group.survived(self.created)
            if self.probe:
                seen -= schedule._probe * est[1]
            nxt = max(nxt, seen)
        # Sent early by the recent answer time, at most half a probe step (a queue the group's
        # own polls build must not make them earlier still).
        return max(0.0, nxt - min(self.group.rtt, 0.5 * schedule._probe * est[1]) - elapsed)

    def due(self, elapsed: float) -> bool:
        """Whether the next poll is due `elapsed` seconds after creation."""
        return self.delay(elapsed) <= _DUE

    def polled(self, elapsed: float) -> None:
        """A poll is sent now, `elapsed` seconds after creation."""
        self._sent = elapsed

    def answered(self, elapsed: float, *, active: bool = True) -> bool:
        """The answer to the poll sent last arrived `elapsed` seconds after creation, saying
        the run is still `active` or not (its time is learned by the group). Returns False
        when no poll was awaiting an answer."""
        if self.probe:
            self.group._probe_seen(self, elapsed if active else None)
        if not active:
            self.group._polled.discard(self)
        sent, self._sent = self._sent, None
        if sent is None:
            return False
        self.group.note_answer_time(elapsed - sent)
        self.last = max(self.last, elapsed)
        return True


class PollGroup:
    """The schedule of one agent and its runs that sleep between polls (see the module
    docstring): roles (`join`), sleepers (`sleep`, `awake`) and who to wake when a run of the
    agent is seen ended (`finished`). Tokens are whatever the driver waits on; the group
    returns those to signal and never touches them."""

    def __init__(
        self,
        schedule: PollSchedule | None = None,
        *,
        probe_every: int = 8,
        probe_gap: float = 0.02,
    ) -> None:
        if probe_every < 1 or probe_gap < 0:
            raise ValueError("probe_every must be >= 1 and probe_gap >= 0")
        self.schedule = schedule if schedule is not None else PollSchedule()
        self._probe_every = probe_every
        self._probe_gap = probe_gap
        self._last_probe = -math.inf
        self._since_probe = probe_every
        self._asleep: set[PollTicket] = set()
        self._heap: list[tuple[float, int, int, PollTicket]] = []
        self._seq = itertools.count()
        #: Probes still going, in order of creation (`_live_keys`), and how old each was when
        #: last seen active (weak: a probe whose caller gave up simply disappears).
        self._live: list[weakref.ref[PollTicket]] = []
        self._live_keys: list[float] = []
        self._ages: weakref.WeakKeyDictionary[PollTicket, float] = weakref.WeakKeyDictionary()
        #: Recent seconds between sending a poll and its answer (a moving average).
        self.rtt = 0.0
        #: Runs joined and not yet seen ended (weak: a run whose caller gave up disappears).
        self._polled: weakref.WeakSet[PollTicket] = weakref.WeakSet()
        #: Runs polled together beyond this many times the learned load: what was learned is
        #: a lower bound (`PollSchedule.lower_bound`), once at least `burst` runs are.
        self._load_factor = 4
        self._burst = 16

    def _probe_seen(self, ticket: PollTicket, age: float | None) -> None:
        if ticket.created is None or ticket not in self._ages:
            return
        if age is not None:
            self._ages[ticket] = max(age, self._ages[ticket])
            return
        del self._ages[ticket]
        i = bisect.bisect_left(self._live_keys, ticket.created)
        while i < len(self._live) and self._live_keys[i] == ticket.created:
            if self._live[i]() is ticket:
                del self._live[i], self._live_keys[i]
                return
            i += 1

    def _add_probe(self, ticket: PollTicket, created: float) -> None:
        i = bisect.bisect_right(self._live_keys, created)
        self._live.insert(i, weakref.ref(ticket))
        self._live_keys.insert(i, created)
        self._ages[ticket] = 0.0

    def _probes_going(self) -> bool:
        while self._live and self._live[-1]() is None:
            del self._live[-1], self._live_keys[-1]
        return bool(self._live)

    def survived(self, created: float) -> float:
        """The greatest age (seconds) at which one of the (up to 4) probes still going created
        last before `created` was seen active (0 if none): a run created a little later, of an
        agent whose runs take about the same time, is very likely going at that age too."""
        i = bisect.bisect_left(self._live_keys, created) - 1
        best, seen = 0.0, 0
        while i >= 0 and seen < 4:
            t = self._live[i]()
            if t is None:
                del self._live[i], self._live_keys[i]  # its caller gave up
            else:
                best = max(best, self._ages.get(t, 0.0))
                seen += 1
            i -= 1
        return best

    def note_answer_time(self, seconds: float) -> None:
        """A poll of a run of the agent took `seconds` to be answered (send to answer)."""
        seconds = min(max(0.0, seconds), self.schedule._max)
        # Quick to rise (a queue building up), slow to fall.
        self.rtt += (0.5 if seconds > self.rtt else 0.1) * (seconds - self.rtt)

    def ticket(self) -> PollTicket:
        """A ticket for a new run (a probe until it `join`s)."""
        return PollTicket(self)

    def join(self, ticket: PollTicket, created: float, *, may_probe: bool = True) -> None:
        """The run of `ticket` was created at `created` and is about to sleep: choose its role
        (never a probe unless `may_probe`: a run followed from the middle is no sample)."""
        ticket.created = created
        self._since_probe += 1
        self._polled.add(ticket)
        load = len(self._polled)
        if load >= self._burst and load > self._load_factor * self.schedule.learned_load:
            # A burst far larger than what the schedule learned under: the runs may take
            # longer (a service under load), so what is known is only a lower bound.
            self.schedule.lower_bound()
        est = self.schedule.estimate()
        # Nothing learned: a probe per `cold_first` seconds is enough to learn from.
        # Else one per `probe_gap` of a typical run, but at least one per 50 ms of creations
        # (enough probes to learn from in a batch of long runs).
        gap = min(self._probe_gap * est[1], 0.05) if est is not None else self.schedule._cold_first
        learning = self.schedule.samples < self.schedule._few and not self._probes_going()
        ticket.probe = may_probe and (
            learning
            or (self._since_probe >= self._probe_every and created - self._last_probe >= gap)
        )
        if ticket.probe:
            # While little is known, every run is a probe unless one is under way.
            self._since_probe = 0
            self._last_probe = created
            self._add_probe(ticket, created)

    def sleep(self, ticket: PollTicket, token: object) -> None:
        """The run of `ticket` sleeps until its next poll, or until `token` is signalled."""
        if ticket.created is None:
            raise ValueError("join the ticket to the group before it sleeps")
        if ticket._woken:
            # Woken to poll, and it is still going: wake it only for runs created later.
            ticket._woken = False
            ticket.misses += 1
            ticket._key = math.inf
        ticket.token = token
        self._asleep.add(ticket)
        # Its key: its creation, later by the slack it missed by (the current slack is
        # added when a run ends, so one ordering serves every sleeper).
        key = ticket.created
        if ticket.misses:
            key += self.schedule.slack() * (2**ticket.misses - 1)
        if key != ticket._key:
            ticket._key = key
            ticket._gen += 1
            heapq.heappush(self._heap, (key, next(self._seq), ticket._gen, ticket))

    def awake(self, ticket: PollTicket) -> bool:
        """The run of `ticket` woke (its timer, a signal, or a cancel). Returns True when it was
        woken to poll now (a run created after it was seen ended)."""
        self._asleep.discard(ticket)
        ticket.token = None
        return ticket._woken

    def finished(
        self, created: float, low: float, high: float | None = None, *, follower: bool = False
    ) -> list[object]:
        """A run of the agent created at `created` was seen ended between `low` and `high`
        seconds after its creation: learn, and return the tokens of the sleeping runs to wake
        (those created before it; every sleeping run when the schedule changed materially)."""
        # A bracket is never narrower than the time a poll takes to be answered.
        relearned = self.schedule.record(
            low,
            high,
            created=created,
            tolerance=self.rtt,
            follower=follower,
            load=max(1, len(self._polled)),
        )
        wake: list[object] = []
        heap = self._heap
        cutoff = created - self.schedule.slack()
        while heap and heap[0][0] <= cutoff:
            _, _, gen, t = heapq.heappop(heap)
            if gen != t._gen:
                continue
            t._key = math.inf
            if t in self._asleep and t.token is not None:
                t._woken = True
                wake.append(t.token)
        if relearned:
            wake.extend(t.token for t in self._asleep if not t._woken and t.token is not None)
        return wake
