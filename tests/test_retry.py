"""The pure retry decision: tables for each rule, and hypothesis properties."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrun._retry import Failure, RetryDecision, RetryPolicy, decide, retry_after_seconds

POLICY = RetryPolicy()
IDEMPOTENT = ["GET", "HEAD", "PUT", "DELETE"]
RETRYABLE_STATUSES = [408, 429, 500, 502, 503, 504]


def _decide(
    method: str = "GET",
    *,
    status: int | None = None,
    failure: Failure | None = None,
    headers: dict[str, str] | None = None,
    attempt: int = 1,
    now: float = 100.0,
    deadline: float | None = None,
    jitter: float = 0.5,
    policy: RetryPolicy = POLICY,
    now_epoch: float | None = None,
) -> RetryDecision:
    return decide(
        policy,
        method=method,
        status=status,
        failure=failure,
        headers=headers or {},
        attempt=attempt,
        now=now,
        deadline=deadline,
        jitter=jitter,
        now_epoch=now_epoch,
    )


@pytest.mark.parametrize("method", IDEMPOTENT)
@pytest.mark.parametrize("status", RETRYABLE_STATUSES)
def test_idempotent_methods_retry_on_retryable_statuses(method: str, status: int) -> None:
    """GET/HEAD/PUT/DELETE retry on 408, 429 and the 5xx gateway/server statuses."""
    assert _decide(method, status=status).retry


@pytest.mark.parametrize("method", IDEMPOTENT)
@pytest.mark.parametrize("failure", list(Failure))
def test_idempotent_methods_retry_on_any_connection_failure(method: str, failure: Failure) -> None:
    """Idempotent methods retry whether or not the request reached the server."""
    assert _decide(method, failure=failure).retry


@pytest.mark.parametrize(
    ("status", "retry"),
    [(429, True), (503, True), (500, False), (502, False), (504, False), (408, False)],
)
def test_post_retries_only_on_statuses_proving_no_action(status: int, retry: bool) -> None:
    """POST retries on 429/503 (not acted on) and never on statuses where it may have acted."""
    decision = _decide("POST", status=status)
    assert decision.retry is retry
    if not retry:
        assert "may have acted" in decision.reason


def test_post_retries_on_connect_failure_but_not_read_failure() -> None:
    """A POST whose connection failed before sending is retried; one sent but unanswered is not."""
    assert _decide("POST", failure=Failure.CONNECT).retry
    decision = _decide("POST", failure=Failure.READ)
    assert not decision.retry
    assert "may have acted" in decision.reason


def test_method_is_case_insensitive() -> None:
    """A lower-case method name is treated like its upper-case form."""
    assert _decide("get", status=500).retry
    assert not _decide("post", status=500).retry


@pytest.mark.parametrize("status", [200, 204, 301, 400, 401, 403, 404, 409, 422, 501])
def test_non_retryable_statuses(status: int) -> None:
    """Success, redirects and client errors (and 501) are never retried, even for GET."""
    decision = _decide("GET", status=status)
    assert not decision.retry
    assert str(status) in decision.reason


def test_attempts_exhausted() -> None:
    """No retry once `attempt` reaches `max_attempts`, and the reason says so."""
    policy = RetryPolicy(max_attempts=3)
    assert _decide(status=503, attempt=2, policy=policy).retry
    decision = _decide(status=503, attempt=3, policy=policy)
    assert not decision.retry
    assert "exhausted" in decision.reason


def test_exponential_backoff_with_full_jitter_capped() -> None:
    """Without a server delay: jitter * min(max_delay, base * 2**(attempt-1))."""
    policy = RetryPolicy(max_attempts=100, base_delay=0.5, max_delay=8.0)
    assert _decide(status=503, attempt=1, jitter=0.5, policy=policy).delay == pytest.approx(0.25)
    assert _decide(status=503, attempt=3, jitter=0.5, policy=policy).delay == pytest.approx(1.0)
    assert _decide(status=503, attempt=10, jitter=0.5, policy=policy).delay == pytest.approx(4.0)
    assert _decide(status=503, attempt=60, jitter=0.99, policy=policy).delay == pytest.approx(7.92)
    assert _decide(status=503, attempt=1, jitter=0.0, policy=policy).delay == 0.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER-MS": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "700"}, 0.7),
        ({"Retry-After": "3", "retry-after-ms": "100"}, 3.0),
        ({"Retry-After": "soon", "x-ms-retry-after-ms": "250"}, 0.25),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "nan", "retry-after-ms": "inf"}, None),
        ({"Content-Type": "application/json"}, None),
        ({}, None),
    ],
)
def test_retry_after_family_parsed(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After (seconds), retry-after-ms and x-ms-retry-after-ms, any case, bad ones skipped."""
    assert retry_after_seconds(headers) == (
        pytest.approx(expected) if expected is not None else None
    )


def test_retry_after_http_date_needs_now_epoch() -> None:
    """An HTTP-date Retry-After is relative to the `now_epoch` passed in; without it, ignored."""
    now = 1_700_000_000.0
    header = {"Retry-After": email.utils.formatdate(now + 7, usegmt=True)}
    assert retry_after_seconds(header, now) == pytest.approx(7.0)
    assert retry_after_seconds(header) is None
    past = {"Retry-After": email.utils.formatdate(now - 30, usegmt=True)}
    assert retry_after_seconds(past, now) == 0.0
    zone_less = {"Retry-After": email.utils.formatdate(now + 4).rsplit(" ", 1)[0] + " -0000"}
    assert retry_after_seconds(zone_less, now) == pytest.approx(4.0)


def test_server_delay_honoured_and_capped() -> None:
    """A server delay replaces the backoff, capped by max_retry_after."""
    decision = _decide("POST", status=429, headers={"Retry-After": "2"}, jitter=0.9)
    assert decision.retry
    assert decision.delay == 2.0
    capped = _decide(status=503, headers={"Retry-After": "3600"}, policy=RetryPolicy())
    assert capped.delay == 60.0


def test_post_429_with_only_ms_header_is_retried() -> None:
    """Unlike azure-core, a POST 429 carrying only retry-after-ms is retried (429 = not acted)."""
    decision = _decide("POST", status=429, headers={"retry-after-ms": "150"})
    assert decision.retry
    assert decision.delay == pytest.approx(0.15)


def test_deadline_stops_retry() -> None:
    """No retry if sleeping the delay would pass the deadline; the reason names the deadline."""
    ok = _decide(status=429, headers={"Retry-After": "2"}, now=10.0, deadline=12.0)
    assert ok.retry
    late = _decide(status=429, headers={"Retry-After": "2"}, now=10.0, deadline=11.9)
    assert not late.retry
    assert "deadline" in late.reason


def test_connection_failures_ignore_headers() -> None:
    """Headers only matter for HTTP responses; a failure uses backoff."""
    decision = _decide(failure=Failure.CONNECT, headers={"Retry-After": "30"}, jitter=0.5)
    assert decision.delay == pytest.approx(0.25)


def test_invalid_arguments() -> None:
    """Exactly one of status/failure; jitter must be in [0, 1)."""
    with pytest.raises(ValueError, match="exactly one"):
        _decide(status=None, failure=None)
    with pytest.raises(ValueError, match="exactly one"):
        _decide(status=503, failure=Failure.READ)
    with pytest.raises(ValueError, match="jitter"):
        _decide(status=503, jitter=1.0)


def test_policy_validation() -> None:
    """A policy with no attempts or negative delays is refused."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="base_delay"):
        RetryPolicy(base_delay=-1.0)


# -- properties -------------------------------------------------------------------------------

# Header text: Latin-1-ish printable characters (what HTTP headers can carry).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=25)
methods = st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "get", "post"])
statuses = st.integers(min_value=100, max_value=599)
header_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-10_000, max_value=10_000_000).map(str),
    header_text,
)
retry_headers = st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after", "retry-after-ms", "X-MS-Retry-After-Ms", "x"]),
    header_values,
    max_size=4,
)
policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=10),
    base_delay=st.floats(min_value=0.0, max_value=5.0),
    max_delay=st.floats(min_value=0.0, max_value=30.0),
    max_retry_after=st.floats(min_value=0.0, max_value=120.0),
)
outcomes = st.one_of(
    statuses.map(lambda s: (s, None)), st.sampled_from(list(Failure)).map(lambda f: (None, f))
)
jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(
    method=st.sampled_from(["POST", "post", "PATCH"]),
    outcome=st.one_of(
        st.sampled_from([500, 502, 504, 408]).map(lambda s: (s, None)),
        st.just((None, Failure.READ)),
    ),
    headers=retry_headers,
    attempt=st.integers(min_value=1, max_value=3),
    jitter=jitters,
)
def test_property_post_never_retried_where_server_may_have_acted(
    method: str,
    outcome: tuple[int | None, Failure | None],
    headers: dict[str, str],
    attempt: int,
    jitter: float,
) -> None:
    """Property: POST/PATCH is never retried on 500/502/504/408 or a READ failure, whatever
    headers say."""
    status, failure = outcome
    assert not _decide(
        method, status=status, failure=failure, headers=headers, attempt=attempt, jitter=jitter
    ).retry


@given(
    policy=policies,
    method=methods,
    outcome=outcomes,
    headers=retry_headers,
    attempt=st.integers(min_value=1, max_value=12),
    now=st.floats(min_value=0.0, max_value=1e6),
    budget=st.one_of(st.none(), st.floats(min_value=0.0, max_value=100.0)),
    jitter=jitters,
)
def test_property_delay_within_deadline_and_caps(
    policy: RetryPolicy,
    method: str,
    outcome: tuple[int | None, Failure | None],
    headers: dict[str, str],
    attempt: int,
    now: float,
    budget: float | None,
    jitter: float,
) -> None:
    """Property: a retry never sleeps past the deadline, never beyond the policy caps, and
    never happens once attempts are exhausted."""
    status, failure = outcome
    deadline = None if budget is None else now + budget
    decision = _decide(
        method,
        status=status,
        failure=failure,
        headers=headers,
        attempt=attempt,
        now=now,
        deadline=deadline,
        jitter=jitter,
        policy=policy,
    )
    if not decision.retry:
        assert decision.reason
        return
    assert attempt < policy.max_attempts
    assert 0.0 <= decision.delay <= max(policy.max_delay, policy.max_retry_after)
    if deadline is not None:
        assert now + decision.delay <= deadline


@given(
    seconds=st.integers(min_value=0, max_value=10**6),
    name=st.sampled_from(["Retry-After", "retry-after", "RETRY-AFTER"]),
)
def test_property_retry_after_seconds_roundtrip(seconds: int, name: str) -> None:
    """Property: an integer Retry-After in any header-name case parses to that many seconds."""
    assert retry_after_seconds({name: str(seconds)}) == float(seconds)


@given(
    millis=st.integers(min_value=0, max_value=10**7),
    name=st.sampled_from(
        ["retry-after-ms", "Retry-After-Ms", "x-ms-retry-after-ms", "X-MS-RETRY-AFTER-MS"]
    ),
)
def test_property_retry_after_ms_roundtrip(millis: int, name: str) -> None:
    """Property: the millisecond headers parse to millis / 1000 seconds."""
    assert retry_after_seconds({name: str(millis)}) == pytest.approx(millis / 1000.0)


@given(delta=st.integers(min_value=0, max_value=10**6))
def test_property_retry_after_http_date(delta: int) -> None:
    """Property: an HTTP-date Retry-After gives the seconds from now_epoch to that date."""
    now = 1_700_000_000.0
    header = {"Retry-After": email.utils.formatdate(now + delta, usegmt=True)}
    assert retry_after_seconds(header, now) == pytest.approx(float(delta))


@given(
    headers=st.dictionaries(header_text, header_text, max_size=5),
    now_epoch=st.one_of(st.none(), st.floats(min_value=0, max_value=4e9)),
)
def test_property_retry_after_never_raises(
    headers: dict[str, str], now_epoch: float | None
) -> None:
    """Property: arbitrary headers never make the parser raise; a result is finite and >= 0."""
    result = retry_after_seconds(headers, now_epoch)
    assert result is None or 0.0 <= result < float("inf")
