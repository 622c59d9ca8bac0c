"""What agentrun's OpenTelemetry hooks cost when no provider is configured (and when one is).

    PYTHONPATH=. .venv/bin/python benchmarks/otel_overhead.py            # N=1000 runs a variant
    PYTHONPATH=. .venv/bin/python benchmarks/otel_overhead.py -n 200 --rounds 3

Self-contained: starts the bundled emulator in a thread (zero queue/run delays, so the client's
own work is as large a share of a run as it can be), then times the same sequential runs in
three variants, interleaved round by round so that machine drift hits all of them alike:

- ``stubbed``: every hook replaced by a bare function that does nothing (the code without
  telemetry, plus the call itself);
- ``no-provider``: the shipped hooks with no tracer or meter provider (the default);
- ``sdk``: an OpenTelemetry SDK tracer and meter provider with in-memory export (the cost when
  turned on; needs opentelemetry-sdk).

It also times each hook alone in its no-provider state (timeit), which is the precise figure:
the A/B of whole runs is dominated by the emulator round trips and machine noise. Prints a
table; docs/observability.md quotes a run of it.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import timeit
from collections.abc import Callable, Iterator
from typing import Any

import anyio

import agentrun
from agentrun import _otel
from agentrun.emulator import Emulator, EmulatorSettings, Timing

ZERO = Timing(queue_delay=0.0, run_duration=0.0, delta_interval=0.0, cancel_delay=0.0)


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


@contextlib.contextmanager
def stubbed(client: agentrun.AsyncClient) -> Iterator[None]:
    """Replace every hook with a do-nothing function for the duration."""
    saved = (_otel.http_done, _otel.retry, _otel.current)
    _otel.http_done = _noop
    _otel.retry = _noop
    _otel.current = lambda obs: _otel._NULL  # type: ignore[assignment]
    client._telemetry.start = _noop  # type: ignore[method-assign]
    try:
        yield
    finally:
        _otel.http_done, _otel.retry, _otel.current = saved
        del client._telemetry.start


async def _runs(client: agentrun.AsyncClient, n: int, mode: str) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await client.run("asst_abc123", "Hi", mode=mode)  # type: ignore[arg-type]
    return (time.perf_counter() - start) / n


def _sdk_client(emu: Emulator) -> tuple[agentrun.AsyncClient, Callable[[], None]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    client = agentrun.AsyncClient(
        emu.endpoint, api_key=emu.api_key, tracer_provider=tp, meter_provider=mp
    )

    def close() -> None:
        exporter.clear()
        tp.shutdown()
        mp.shutdown()

    return client, close


async def whole_runs(n: int, rounds: int, mode: str, with_sdk: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"stubbed": [], "no-provider": [], "sdk": []}
    async with (
        Emulator(EmulatorSettings(timing=ZERO)) as emu,
        agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key) as plain,
    ):
        await _runs(plain, 20, mode)  # warm up: pool, token, imports
        sdk: agentrun.AsyncClient | None = None
        close: Callable[[], None] = lambda: None  # noqa: E731
        if with_sdk:
            sdk, close = _sdk_client(emu)
            await _runs(sdk, 20, mode)
        try:
            for _ in range(rounds):
                with stubbed(plain):
                    out["stubbed"].append(await _runs(plain, n, mode))
                out["no-provider"].append(await _runs(plain, n, mode))
                if sdk is not None:
                    out["sdk"].append(await _runs(sdk, n, mode))
        finally:
            if sdk is not None:
                await sdk.aclose()
            close()
    return out


def hook_costs() -> dict[str, float]:
    """Nanoseconds per call of each hook in its no-provider state, and of a bare call."""
    telemetry = _otel.Telemetry("http://127.0.0.1:1/api/projects/p")
    started = time.monotonic()
    number = 200_000

    def per_call(stmt: Callable[[], object]) -> float:
        return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e9

    def with_current() -> None:
        with _otel.current(None):
            pass

    return {
        "bare function call": per_call(lambda: _noop("POST", "threads/runs", 200, 1, None, 0.0)),
        "Telemetry.start (per run)": per_call(
            lambda: telemetry.start("asst_abc123", "poll", None, (), None)
        ),
        "http_done (per request)": per_call(
            lambda: _otel.http_done("POST", "threads/runs", 200, 1, None, started)
        ),
        "current(None) (per step)": per_call(with_current),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="runs per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=["poll", "stream"], default="stream")
    parser.add_argument("--no-sdk", action="store_true", help="skip the SDK variant")
    args = parser.parse_args()

    print("per hook, no provider (ns per call, best of 5):")
    for name, ns in hook_costs().items():
        print(f"  {name:<28} {ns:8.0f}")

    with_sdk = not args.no_sdk
    if with_sdk:
        try:
            import opentelemetry.sdk  # noqa: F401
        except ImportError:
            with_sdk = False
    res = anyio.run(whole_runs, args.n, args.rounds, args.mode, with_sdk)
    print(f"\nwhole runs ({args.mode} mode, {args.n} runs x {args.rounds} rounds, sequential):")
    base = statistics.median(res["stubbed"])
    for name, values in res.items():
        if not values:
            continue
        med = statistics.median(values)
        print(
            f"  {name:<12} median {med * 1e6:8.1f} us/run  ({(med / base - 1) * 100:+.1f}% vs "
            f"stubbed; rounds: {', '.join(f'{v * 1e6:.0f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
