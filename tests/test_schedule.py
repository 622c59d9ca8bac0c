"""The poll schedule and the group of runs polled together: simulated, with no clock and no network.

`simulate` drives `PollGroup` and `PollTicket` exactly as `agentrun._driver` does (join at the
first sleep, re-plan on the machine's `poll_delay`, a wake polls now, a timer polls when due, a
run seen ended teaches the group and wakes whom it names) on a discrete-event clock, with runs
whose creation times and durations the test chooses.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun._schedule import PollGroup, PollSchedule, PollTicket


@dataclass
class _Run:
    created: float
    ends: float
    ticket: PollTicket
    polls: int = 0
    last_active: float = 0.0
    seen_end: float | None = None
    sleep_gen: int = 0


@dataclass
class Outcome:
    """Per run: polls, lag (seconds between the end and the poll that saw it) and duration."""

    polls: list[int] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    @property
    def mean_polls(self) -> float:
        return statistics.fmean(self.polls)

    def lag_share(self, q: float = 0.5) -> float:
        shares = sorted(lag / d for lag, d in zip(self.lags, self.durations, strict=True))
        return shares[min(len(shares) - 1, int(q * len(shares)))]


def simulate(
    group: PollGroup,
    runs: list[tuple[float, float]],
    *,
    rtt: Callable[[float], float] | float = 0.005,
) -> Outcome:
    """Run `(created, duration)` pairs through `group`; a poll sent at `t` is answered
    `rtt(t)` seconds later (a constant, or a function of the time) and sees the run as it is
    when answered."""
    answer_time = rtt if callable(rtt) else (lambda _t: float(rtt))
    state = [_Run(c, c + d, group.ticket()) for c, d in runs]
    events: list[tuple[float, int, str, int, int]] = []
    seq = 0

    def push(at: float, kind: str, i: int, gen: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, i, gen))

    def sleep(i: int, now: float) -> None:
        r = state[i]
        if r.ticket.created is None:
            group.join(r.ticket, r.created)
        r.sleep_gen += 1
        group.sleep(r.ticket, i)
        push(now + r.ticket.delay(now - r.created), "timer", i, r.sleep_gen)

    def poll(i: int, now: float) -> None:
        r = state[i]
        r.ticket.polled(now - r.created)
        r.polls += 1
        at = now + answer_time(now)
        push(at, "answer", i, int(r.ends <= at))

    for i, r in enumerate(state):
        push(r.created, "created", i)
    while events:
        now, _, kind, i, gen = heapq.heappop(events)
        r = state[i]
        if kind == "created":
            r.last_active = now
            sleep(i, now)
        elif kind in ("timer", "wake"):
            if r.seen_end is not None or (kind == "timer" and gen != r.sleep_gen):
                continue
            if kind == "wake" and r.ticket.token is None:
                continue  # already awake (a timer and a wake at the same moment)
            r.sleep_gen += 1  # the pending timer, if any, is cancelled
            woken = group.awake(r.ticket)
            if woken or r.ticket.due(now - r.created):
                poll(i, now)
            else:
                sleep(i, now)
        elif kind == "answer":
            r.ticket.answered(now - r.created, active=not gen)
            if gen:
                r.seen_end = now
                lo, hi = r.last_active - r.created, now - r.created
                for token in group.finished(r.created, lo, hi, follower=not r.ticket.probe):
                    assert isinstance(token, int)
                    push(now, "wake", token)
            else:
                r.last_active = now
                sleep(i, now)
    out = Outcome()
    for r in state:
        assert r.seen_end is not None
        out.polls.append(r.polls)
        out.lags.append(r.seen_end - r.ends)
        out.durations.append(r.ends - r.created)
    return out


def _burst(
    n: int, spread: float, start: float, stop: float, jitter: float, seed: int, at: float = 0.0
) -> list[tuple[float, float]]:
    """`n` runs created over `spread` seconds from `at`, durations drifting from `start` to
    `stop` seconds in order of creation, each off by a relative jitter (normal, sd `jitter`)."""
    rnd = random.Random(seed)
    created = sorted(at + rnd.uniform(0, spread) for _ in range(n))
    return [
        (c, (start + (stop - start) * k / max(1, n - 1)) * (1 + rnd.gauss(0, jitter)))
        for k, c in enumerate(created)
    ]


def _warm(group: PollGroup, duration: float) -> None:
    """One lone run first, as the benchmark's warm-up does (starting cold)."""
    simulate(group, [(-100.0, duration)])


# -- the group on bursts, lone runs and long runs ---------------------------------------------


def test_burst_of_steady_runs_polls_once_each_with_a_small_lag() -> None:
    """1,000 runs created over 0.5 s taking 1.6 s ± 1% (the emulator's): about one poll per
    run and a median lag under 5% of the run."""
    group = PollGroup()
    _warm(group, 1.6)
    out = simulate(group, _burst(1000, 0.5, 1.6, 1.6, 0.01, seed=1))
    assert out.mean_polls <= 1.15
    assert out.lag_share(0.5) < 0.05
    assert out.lag_share(0.99) < 0.15


def test_burst_with_drifting_durations_keeps_lag_and_polls_bounded() -> None:
    """1,000 runs created over 0.5 s, durations drifting from 1.0 to 2.5 s with 3% jitter (a
    service slowing under the load), after a warm-up at 1.0 s: median lag under 10% of the run
    and fewer than 2 polls per run."""
    group = PollGroup()
    _warm(group, 1.0)
    out = simulate(group, _burst(1000, 0.5, 1.0, 2.5, 0.03, seed=2))
    assert out.mean_polls < 2.0
    assert out.lag_share(0.5) < 0.10


def test_cold_burst_learns_from_its_first_runs() -> None:
    """A burst with nothing learned: the first runs to end teach the group, the rest re-plan;
    fewer than 3 polls per run, median lag under 10%."""
    group = PollGroup()
    out = simulate(group, _burst(1000, 0.5, 1.6, 1.6, 0.01, seed=3))
    assert out.mean_polls < 3.0
    assert out.lag_share(0.5) < 0.10


def test_lone_runs_keep_lag_small_with_few_polls() -> None:
    """Runs one after the other (no batch to share the end with): after the first, at most 1.5
    polls per run on average and a median lag under 10%."""
    group = PollGroup()
    rnd = random.Random(4)
    polls, shares = [], []
    for k in range(40):
        d = 1.6 * (1 + rnd.gauss(0, 0.02))
        out = simulate(group, [(10.0 * k, d)])
        if k:
            polls += out.polls
            shares.append(out.lags[0] / d)
    assert statistics.fmean(polls) <= 1.5
    assert statistics.median(shares) < 0.10


def test_long_runs_of_a_minute_are_polled_sparingly() -> None:
    """Batches of 60 s runs (± 20%: the real service varies with the prompt). The first batch
    after one warm-up run (whose spread says nothing of the batch's) keeps a median lag under
    15% of the run, the next under 10%, each with no more than ~5 polls per run; once the runs
    are known to take a minute, no poll interval is below a second."""
    group = PollGroup()
    _warm(group, 60.0)
    first = simulate(group, _burst(200, 2.0, 60.0, 60.0, 0.2, seed=5))
    assert first.lag_share(0.5) < 0.15
    assert first.mean_polls <= 5.0
    second = simulate(group, _burst(200, 2.0, 60.0, 60.0, 0.2, seed=15, at=1000.0))
    assert second.lag_share(0.5) < 0.10
    assert second.mean_polls <= 5.0
    assert group.schedule.next_poll(50.0, probe=True) - 50.0 >= 1.0


def test_widely_varying_durations_fall_back_to_a_bounded_lag() -> None:
    """Durations from 5 to 120 s in one batch (creation order says nothing about the end):
    once a first such batch taught the group, the median lag stays under 10% of the run and
    every run at least as long as the low estimate is seen within ~10% of its run (the
    followers' grid; a run shorter than anything learned waits until the low estimate), with
    fewer than 15 polls per run."""
    group = PollGroup()
    rnd = random.Random(6)

    def batch(at: float) -> list[tuple[float, float]]:
        return [(at + rnd.uniform(0, 1.0), rnd.uniform(5, 120)) for _ in range(300)]

    _warm(group, 30.0)
    simulate(group, batch(0.0))
    low = (group.schedule.estimate() or (0.0,))[0]
    out = simulate(group, batch(1000.0))
    assert out.lag_share(0.5) < 0.10
    assert out.mean_polls < 15
    known = [lag / d for lag, d in zip(out.lags, out.durations, strict=True) if d >= low]
    assert known and max(known) < 0.15


def test_a_wake_that_finds_the_run_going_doubles_its_slack() -> None:
    """A run woken because a later one ended, and found still going, is woken again only by a
    run created later still."""
    group = PollGroup(probe_every=1, probe_gap=0.0)
    group.schedule.record(1.0, 1.02)
    a, b, c = group.ticket(), group.ticket(), group.ticket()
    group.join(a, 0.0)
    group.join(b, 0.1)
    group.join(c, 0.2)
    group.sleep(a, "a")
    assert group.finished(0.1, 0.99, 1.0) == ["a"]
    assert group.awake(a) is True
    group.sleep(a, "a")  # polled, still going: sleeps again
    assert a.misses == 1
    assert group.finished(0.02, 0.99, 1.0) == []  # created too close after it: not woken
    assert group.finished(0.2, 0.99, 1.0) == ["a"]


def test_join_makes_a_few_probes() -> None:
    """In a burst, one probe per `probe_gap` of creation time and `probe_every` runs; alone,
    one run in `probe_every`."""
    group = PollGroup(probe_every=8, probe_gap=0.02)
    for d in (1.0, 1.01, 0.99, 1.0, 1.02):
        group.schedule.record(d, d + 0.02)
    tickets = []  # in flight together: kept alive, as their runs keep them
    for k in range(1000):
        t = group.ticket()
        group.join(t, k * 0.0005)  # 1,000 runs over 0.5 s
        tickets.append(t)
    assert 15 <= sum(t.probe for t in tickets) <= 30
    lone = PollGroup(probe_every=8)
    for d in (1.0, 1.01, 0.99, 1.0, 1.02):
        lone.schedule.record(d, d + 0.02)
    probes = 0
    for k in range(80):
        t = lone.ticket()
        lone.join(t, 10.0 * k)
        probes += t.probe
        t.answered(1.0, active=False)  # it ended before the next one started
    assert probes == 10


def test_every_run_is_a_probe_while_little_is_known() -> None:
    """With fewer than five runs learned, a run is a probe unless a probe is under way."""
    group = PollGroup()
    group.schedule.record(1.0, 1.1)
    first, second = group.ticket(), group.ticket()
    group.join(first, 0.0)
    group.join(second, 0.001)
    assert first.probe and not second.probe
    first.answered(1.05, active=False)
    third = group.ticket()
    group.join(third, 2.0)
    assert third.probe


# -- the schedule alone -----------------------------------------------------------------------


def test_cold_schedule_starts_soon_and_backs_off() -> None:
    """Without history: a probe polls after `cold_first`, then every 15% of the time spent; a
    follower after 8 * `cold_first`, then every 50%; both capped by `max_interval`."""
    s = PollSchedule(max_interval=2.0, cold_first=0.3)
    assert s.next_poll(0.0, probe=True) == pytest.approx(0.3)
    assert s.next_poll(0.4, probe=True) == pytest.approx(0.46)
    assert s.next_poll(0.0, probe=False) == pytest.approx(2.0)  # 8 * cold_first, capped
    assert s.next_poll(2.0, probe=False) == pytest.approx(3.0)
    assert s.next_poll(1000.0, probe=True) == pytest.approx(1002.0)


def test_learned_schedule_follower_polls_at_high_probe_from_low() -> None:
    """After ~1 s runs: a follower polls once at the high end; a probe from the low end, every
    3% of the typical run; overdue, both back off to ~10% of the time taken."""
    s = PollSchedule()
    for d in (0.95, 1.0, 1.05, 1.0, 0.98):
        s.record(d)
    low, typical, high = s.estimate() or (0, 0, 0)
    assert (low, high) == (pytest.approx(0.95), pytest.approx(1.05))
    assert s.next_poll(0.0, probe=False) == pytest.approx(1.05)
    assert s.next_poll(0.0, probe=True) == pytest.approx(0.95)
    assert s.next_poll(0.95, probe=True) == pytest.approx(0.95 + 0.03 * typical)
    assert s.next_poll(1.05, probe=False) == pytest.approx(0.95 * 1.1**2)  # grid from low
    assert s.next_poll(10.0, probe=True) == pytest.approx(11.0)


def test_only_narrow_brackets_teach_the_schedule() -> None:
    """A run seen ended at its first poll (a wide bracket) teaches nothing once something is
    known, unless it ended before anything recent (the service got faster)."""
    s = PollSchedule()
    assert s.record(1.0, 1.05) is True  # first thing learned
    assert s.record(0.0, 1.2) is False  # "ended before 1.2 s": nothing new
    assert s.samples == 1
    s.record(0.0, 0.6)  # ended before anything seen: the service got faster, learned
    assert s.samples == 2
    assert (s.estimate() or (1.0,))[0] < 0.6


def test_invalid_settings_are_refused() -> None:
    """Nonsensical parameters raise immediately."""
    with pytest.raises(ValueError, match="lag_fraction"):
        PollSchedule(lag_fraction=0)
    with pytest.raises(ValueError, match="probe_fraction"):
        PollSchedule(probe_fraction=0.5)
    with pytest.raises(ValueError, match="min_interval"):
        PollSchedule(min_interval=3, max_interval=1)
    with pytest.raises(ValueError, match="probe_every"):
        PollGroup(probe_every=0)
    with pytest.raises(ValueError, match="join"):
        PollGroup().sleep(PollGroup().ticket(), object())


@settings(deadline=None)
@given(
    durations=st.lists(st.floats(min_value=0.01, max_value=600), min_size=1, max_size=40),
    after=st.floats(min_value=0, max_value=3600),
    probe=st.booleans(),
)
def test_next_poll_is_always_later_and_bounded(
    durations: list[float], after: float, probe: bool
) -> None:
    """Whatever was learned, the next poll comes after the last one by at least
    `min_interval`, and once the run may have ended (past the low estimate) by at most
    `max_interval`."""
    s = PollSchedule()
    for d in durations:
        s.record(d * 0.97, d)
    t = s.next_poll(after, probe=probe)
    assert t >= after + 0.02 - 1e-9
    low = (s.estimate() or (math.inf,))[0]
    if after >= low:
        assert t <= after + 5.0 + 1e-9


def test_a_follower_waits_while_an_older_probe_is_still_going() -> None:
    """Where durations are steady, a follower does not poll before the age at which a probe
    created just before it was last seen still going; once that probe ends, it no longer
    holds the follower back."""
    group = PollGroup(probe_every=2, probe_gap=0.0)
    for d in (1.0, 1.01, 0.99, 1.0, 1.02):
        group.schedule.record(d, d + 0.02, created=-10.0 + d)
    probe, follower = group.ticket(), group.ticket()
    group.join(probe, 0.0)
    group.join(follower, 0.01)
    assert probe.probe and not follower.probe
    alone = follower.delay(0.0)
    probe.polled(1.5)
    probe.answered(1.6)  # still going at 1.6 s, well past the usual ~1 s
    assert follower.delay(0.0) > alone
    assert follower.delay(0.0) >= 1.6 - 0.05
    probe.polled(1.7)
    probe.answered(1.75, active=False)
    assert follower.delay(0.0) <= alone  # (sent a little earlier now: polls take time)


# -- a burst far larger than what was learned; probes -----------------------------------------


def _streamed(group: PollGroup, duration: float) -> None:
    """A lone streamed run first, as the warm-up of `auto` and `acompletion()` is: its exact
    end is learned, and it never joins the group (it never sleeps between polls)."""
    group.finished(-100.0, duration, duration)


def test_a_burst_after_one_streamed_run_polls_as_little_as_after_a_polled_one() -> None:
    """One streamed run of 1.05 s (the service unloaded), then 1,000 polled runs created over
    0.5 s that take 1.7 to 2.2 s (the service under the burst's load): what the lone run taught
    is only a lower bound, so the followers wait for the probes instead of polling at its
    length and every 10% after (4.5 polls a run when it was trusted): fewer than 1.6 polls a
    run (1.35 after a polled warm-up) and a median lag under 6% of the run."""
    group = PollGroup()
    _streamed(group, 1.05)
    out = simulate(group, _burst(1000, 0.5, 1.7, 2.2, 0.03, seed=8))
    assert out.mean_polls < 1.6
    assert out.lag_share(0.5) < 0.06


def test_what_was_learned_under_far_less_load_becomes_a_lower_bound() -> None:
    """Learned from one run alone, the schedule holds while up to 15 runs are polled together;
    the 16th makes it a lower bound: a follower then polls no sooner than twice the high end,
    and the first narrow bracket of a probe replaces the window and re-plans every sleeper.
    Learned with 100 runs polled together, 400 at once leave it as it is."""
    group = PollGroup()
    _streamed(group, 1.0)
    tickets = [group.ticket() for _ in range(16)]
    for k, t in enumerate(tickets[:15]):
        group.join(t, 0.001 * k)
    assert not group.schedule.provisional
    group.join(tickets[15], 0.015)
    assert group.schedule.provisional
    high = (group.schedule.estimate() or (0.0, 0.0, 0.0))[2]
    follower = tickets[15]
    assert not follower.probe
    assert group.schedule.next_poll(0.0, probe=False) == pytest.approx(2 * high)
    group.sleep(follower, "sleeping")
    probe = tickets[0]
    assert probe.probe
    probe.polled(1.78)
    probe.answered(1.8)
    probe.polled(1.83)
    probe.answered(1.85, active=False)
    assert group.finished(0.0, 1.8, 1.85) == ["sleeping"]
    assert group.schedule.samples == 1
    assert (group.schedule.estimate() or (0.0, 0.0))[1] == pytest.approx(1.825)
    assert not group.schedule.provisional

    busy = PollGroup()
    for d in (1.0, 1.01, 0.99, 1.0, 1.02):
        busy.schedule.record(d, d + 0.02, load=100)
    crowd = [busy.ticket() for _ in range(400)]
    for k, t in enumerate(crowd):
        busy.join(t, 0.001 * k)
    assert not busy.schedule.provisional


def test_a_probe_thins_out_past_the_typical_run() -> None:
    """A probe polls every 3% of the typical run up to it, then every 3% of the time taken
    (a bracket still narrow enough to learn); well past the high end every 10%, except while
    what is known is a lower bound, where it keeps to 3% so that it learns the longer runs."""
    s = PollSchedule()
    for d in (0.95, 1.0, 1.05, 1.0, 0.98):
        s.record(d)
    typical = (s.estimate() or (0.0, 0.0))[1]
    assert s.next_poll(0.96, probe=True) == pytest.approx(0.96 + 0.03 * typical)
    assert s.next_poll(1.2, probe=True) == pytest.approx(1.2 * 1.03)
    assert s.next_poll(4.0, probe=True) == pytest.approx(4.4)
    s.lower_bound()
    assert s.next_poll(4.0, probe=True) == pytest.approx(4.0 * 1.03)


def test_a_probe_starts_a_step_before_an_older_probe_was_last_seen_going() -> None:
    """Where durations are steady, a probe created just after another still going does not
    poll from the low end: it starts one of its steps before the age at which the older probe
    was last seen still going, so its own bracket stays narrow."""
    group = PollGroup(probe_every=1, probe_gap=0.0)
    for d in (1.0, 1.01, 0.99, 1.0, 1.02):
        group.schedule.record(d, d + 0.02)
    older, newer = group.ticket(), group.ticket()
    group.join(older, 0.0)
    group.join(newer, 0.01)
    assert older.probe and newer.probe
    low, typical, _ = group.schedule.estimate() or (0.0, 0.0, 0.0)
    assert newer.delay(0.0) == pytest.approx(low)
    older.polled(1.5)
    older.answered(1.6)  # still going at 1.6 s
    step = 0.03 * typical
    assert newer.delay(0.0) == pytest.approx(1.6 - step - min(group.rtt, 0.5 * step))


def test_a_lower_bound_disproved_by_a_probe_is_dropped() -> None:
    """A polled warm-up of 1.5 s, then a burst of 100 runs that take as long (the emulator at
    N=100): the burst makes what was learned a lower bound, but the first probe's run ends by
    its first poll, within the learned high end. The bound is disproved: every follower
    re-plans to the learned schedule instead of waiting for twice the high end (the bench's
    poll row at N=100 had a lag p50 of 1.95 s on 1.55 s runs, in 2 of 5 repetitions)."""
    group = PollGroup()
    _warm(group, 1.5)
    out = simulate(group, _burst(100, 0.15, 1.55, 1.55, 0.005, seed=3))
    assert out.lag_share(0.5) < 0.15
    assert out.mean_polls < 1.6
    # The same seen directly: the first probe ends at its first poll, inside the learned high.
    group = PollGroup()
    for d in (1.49, 1.5, 1.51):
        group.schedule.record(d, d + 0.02)  # learned precisely, one run at a time
    tickets = [group.ticket() for _ in range(20)]
    for k, t in enumerate(tickets):
        group.join(t, 0.001 * k)
    assert group.schedule.provisional
    high = (group.schedule.estimate() or (0.0, 0.0, 0.0))[2]
    for t in tickets[1:]:
        group.sleep(t, t)
    probe = tickets[0]
    assert probe.probe
    probe.polled(high * 0.99)
    probe.answered(high, active=False)
    woken = group.finished(0.0, 0.0, high)
    assert set(woken) == set(tickets[1:])  # every sleeper re-plans
    assert not group.schedule.provisional
    assert group.schedule.next_poll(0.0, probe=False) < 1.5 * high
