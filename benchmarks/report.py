"""Render benchmark results (results/latest.json) as docs/benchmarks.md and an SVG chart.

The figures, tables, target checks and chart are generated; the analysis (profiles, the
reasons behind the defaults) is kept by hand in analysis.md beside this file and included.
"""

from __future__ import annotations

import html
import pathlib
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ANALYSIS = HERE / "analysis.md"

PEERS = (
    ("litellm", "LiteLLM"),
    ("litellm-stream", "LiteLLM stream"),
    ("sdk-poll", "azure-ai-agents"),
    ("sdk-stream", "azure-ai-agents stream"),
)
KIND_TITLE = {"new": "new threads", "continue": "continued threads"}


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _p(summary: dict[str, float] | None, key: str = "p50") -> float | None:
    return None if not summary else summary.get(key)


def _ratio(peer: float | None, mine: float | None) -> str:
    if peer is None or mine is None or mine <= 0:
        return "–"
    r = peer / mine
    return f"{r:.1f}×" if r < 100 else f"{r:,.0f}×"


def scenarios(results: list[dict[str, Any]]) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for r in results:
        key = (r["kind"], r["n"])
        if key not in seen:
            seen.append(key)
    return sorted(seen, key=lambda k: (k[0] != "new", k[1]))


def scenario_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| client | ok | wall s | CPU ms/inv | peak RSS MB | mem KB/inv | req/inv | conns "
        "| peak conns | tokens | lag p50 / p99 ms | latency p50 / p99 ms | +TTFT p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "failed" in r:
            out.append(f"| {r['label']} | failed: {r['failed'][:120]} |" + " |" * 11)
            continue
        lag, lat = r.get("lag_ms"), r.get("latency_ms")
        out.append(
            f"| {r['label']} | {r['ok']}/{r['n']} | {_fmt(r['wall_s'])} "
            f"| {_fmt(r['cpu_ms_per_inv'])} | {_fmt(r['peak_rss_mb'], 1)} "
            f"| {_fmt(r['mem_kb_per_inv'], 1)} | {_fmt(r['requests_per_inv'])} "
            f"| {r['connections_opened']} | {r['peak_connections']} | {r['tokens_issued']} "
            f"| {_fmt(_p(lag), 1)} / {_fmt(_p(lag, 'p99'), 1)} "
            f"| {_fmt(_p(lat), 0)} / {_fmt(_p(lat, 'p99'), 0)} "
            f"| {_fmt(_p(r.get('ttft_added_ms')), 1)} |"
        )
    return out


def ratio_table(rows: list[dict[str, Any]]) -> list[str]:
    by = {r["client"]: r for r in rows if "failed" not in r}
    peers = [(k, label) for k, label in PEERS if k in by]
    mine = [r for r in rows if r["family"] == "agentrun" and "failed" not in r]
    if not peers or not mine:
        return []
    head = "| agentrun variant | " + " | ".join(f"vs {label}" for _, label in peers) + " |"
    out = [
        "Each cell: the peer's figure divided by agentrun's, for CPU per invocation / wall "
        "time / HTTP requests (higher means agentrun spends less).",
        "",
        head,
        "|---|" + "---:|" * len(peers),
    ]
    for r in mine:
        cells = []
        for key, _ in peers:
            p = by[key]
            cells.append(
                f"{_ratio(p['cpu_ms_per_inv'], r['cpu_ms_per_inv'])} / "
                f"{_ratio(p['wall_s'], r['wall_s'])} / "
                f"{_ratio(p['requests_per_inv'], r['requests_per_inv'])}"
            )
        out.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return out


def targets(results: list[dict[str, Any]], pool_limit: int = 100) -> list[str]:
    """The issue's targets, measured (reported, not asserted)."""

    def get(client: str, kind: str, n: int) -> dict[str, Any] | None:
        for r in results:
            if (r["client"], r["kind"], r["n"]) == (client, kind, n) and "failed" not in r:
                return r
        return None

    def best(clients: tuple[str, ...], kind: str, n: int) -> dict[str, Any] | None:
        found = [r for c in clients if (r := get(c, kind, n))]
        return min(found, key=lambda r: r["cpu_ms_per_inv"]) if found else None

    lines = ["| target | measured | met? |", "|---|---|---|"]

    def row(target: str, measured: str, ok: bool | None) -> None:
        mark = "–" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {target} | {measured} | {mark} |")

    s = [get("agentrun-stream", k, n) for k in ("new", "continue") for n in (1, 100, 1000)]
    s = [r for r in s if r]
    if s:
        worst = max(r["requests_per_inv"] for r in s)
        row(
            "one request per streamed invocation",
            f"{worst:g} (worst over streamed scenarios)",
            worst <= 1.0,
        )
    for n in (100, 1000):
        pairs = (
            ("agentrun-poll", "litellm", 10),
            ("agentrun-stream", "litellm-stream", 10),
            ("agentrun-poll", "sdk-poll", 3),
            ("agentrun-stream", "sdk-stream", 3),
        )
        for mine, theirs, factor in pairs:
            a, b = get(mine, "new", n), get(theirs, "new", n)
            if a and b:
                r = b["cpu_ms_per_inv"] / a["cpu_ms_per_inv"]
                row(
                    f"≥{factor}× less CPU per invocation, like for like ({n} new): "
                    f"{a['label']} vs {b['label']}",
                    f"{r:.1f}× ({a['cpu_ms_per_inv']:.2f} ms vs {b['cpu_ms_per_inv']:.2f} ms)",
                    r >= factor,
                )
        me = get("agentrun-auto", "new", n)
        for clients, name, factor in (
            (("litellm", "litellm-stream"), "LiteLLM", 10),
            (("sdk-poll", "sdk-stream"), "azure-ai-agents", 3),
        ):
            peer = best(clients, "new", n)
            if me and peer:
                r = peer["cpu_ms_per_inv"] / me["cpu_ms_per_inv"]
                row(
                    f"≥{factor}× less CPU per invocation ({n} new): agentrun auto vs {name}'s "
                    "cheapest variant",
                    f"{r:.1f}× (agentrun auto {me['cpu_ms_per_inv']:.2f} ms vs "
                    f"{peer['label']} {peer['cpu_ms_per_inv']:.2f} ms)",
                    r >= factor,
                )
    for client in ("agentrun-sp", "agentrun-auto", "agentrun-poll"):
        r = get(client, "new", 10000)
        if not r:
            continue
        row(
            f"10,000 concurrent ({r['label']}): one token request",
            f"{r['tokens_issued']} token request(s), {r['ok']:,} ok",
            r["tokens_issued"] <= 1 if client == "agentrun-sp" else None,
        )
        # The service-principal run also opens azure-identity's own connection to the token
        # endpoint, which is not part of agentrun's pool: allow exactly that one.
        token_conn = 1 if client == "agentrun-sp" else 0
        row(
            f"10,000 concurrent ({r['label']}): ≤ pool limit ({pool_limit}) connections",
            f"{r['connections_opened']} opened, peak {r['peak_connections']} open"
            + (" (one is the credential's, to the token endpoint)" if token_conn else ""),
            r["peak_connections"] <= pool_limit + token_conn,
        )
        row(
            f"10,000 concurrent ({r['label']}): < 25 KB client memory per in-flight run",
            f"{r['mem_kb_per_inv']:.1f} KB (RSS growth {r['phase_growth_mb']} MB)",
            r["mem_kb_per_inv"] < 25,
        )
    run_ms = _run_ms(results)
    for client, limit, what in (
        ("agentrun-stream", 5.0, "p50 completion lag < 5 ms streaming"),
        ("agentrun-auto", 5.0, "p50 completion lag < 5 ms streaming (auto, all streamed)"),
        (
            "agentrun-poll",
            run_ms / 10,
            f"p50 completion lag < 10% of the run ({run_ms:,.0f} ms) polling",
        ),
    ):
        for n in (1, 100, 1000):
            r = get(client, "new", n)
            # `auto` streams only while streams hold less than half the pool.
            if client == "agentrun-auto" and (not r or n > pool_limit // 2):
                continue
            lag = _p(r.get("lag_ms")) if r else None
            if lag is not None:
                row(f"{what} ({n} new)", f"{lag:.1f} ms", lag < limit)
    return lines


def _run_ms(results: list[dict[str, Any]]) -> float:
    """How long a run lasts on the emulator, created to completed (median over the runs)."""
    measured = [r["run_ms"] for r in results if r.get("run_ms")]
    if measured:
        return sorted(measured)[len(measured) // 2]
    return 1300.0  # queue 0.05 s + run 1.0 s + a ~25-delta reply at 0.01 s


def svg_chart(results: list[dict[str, Any]]) -> str:
    """Horizontal bars: client CPU ms per invocation (log scale), one group per scenario."""
    groups = [(k, n) for k, n in scenarios(results) if n in (100, 1000) and k == "new"]
    rows: list[tuple[str, str, float, str]] = []
    colors = {"agentrun": "#2f7ed8", "litellm": "#d9534f", "sdk": "#f0ad4e"}
    for kind, n in groups:
        for r in results:
            if (r["kind"], r["n"]) == (kind, n) and "failed" not in r and r["cpu_ms_per_inv"] > 0:
                rows.append(
                    (
                        f"{n:,} {KIND_TITLE[kind]}",
                        r["label"],
                        r["cpu_ms_per_inv"],
                        colors.get(r["family"], "#777"),
                    )
                )
    if not rows:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    import math

    lo = 10 ** math.floor(math.log10(min(v for _, _, v, _ in rows)))
    hi = 10 ** math.ceil(math.log10(max(v for _, _, v, _ in rows)))
    left, width, bar, gap = 230, 520, 16, 4
    height = 50 + len(rows) * (bar + gap) + len(groups) * 24 + 30

    def x(v: float) -> float:
        return left + width * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="10" y="20" font-size="14" font-weight="bold">Client CPU per invocation '
        "(ms, log scale; lower is better)</text>",
    ]
    y = 40
    decade = lo
    while decade <= hi:
        parts.append(
            f'<line x1="{x(decade):.1f}" y1="30" x2="{x(decade):.1f}" '
            f'y2="{height - 25}" stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{x(decade):.1f}" y="{height - 10}" text-anchor="middle">{decade:g}</text>'
        )
        decade *= 10
    current = None
    for group, label, value, color in rows:
        if group != current:
            current = group
            y += 8
            parts.append(
                f'<text x="10" y="{y + 10}" font-weight="bold">{html.escape(group)}</text>'
            )
            y += 16
        parts.append(
            f'<text x="{left - 6}" y="{y + bar - 4}" text-anchor="end">{html.escape(label)}</text>'
        )
        parts.append(
            f'<rect x="{left}" y="{y}" width="{max(1.0, x(value) - left):.1f}" '
            f'height="{bar}" fill="{color}"/>'
        )
        parts.append(f'<text x="{x(value) + 4:.1f}" y="{y + bar - 4}">{value:.2f}</text>')
        y += bar + gap
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _versions(versions: dict[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for key, version in versions.items():
        where, _, name = key.rpartition(": ")
        groups.setdefault(where or "", []).append(f"{name} {version}")
    return "; ".join(
        f"{where}: {', '.join(items)}" if where else ", ".join(items)
        for where, items in groups.items()
    )


def render(data: dict[str, Any]) -> str:
    meta, results = data["meta"], data["results"]
    m = meta["machine"]
    s = meta["settings"]
    emu = s["emulator"]
    out = [
        "# Benchmarks: agentrun against LiteLLM and azure-ai-agents",
        "",
        "<!-- Generated by `make bench` (benchmarks/bench.py, benchmarks/report.py); the analysis "
        "section comes from benchmarks/analysis.md. Edit those, not this file. -->",
        "",
        f"Run {meta['date']}, {meta['duration_s']:.0f} s in all. Reproduce with `make bench` "
        "(figures in `benchmarks/results/latest.json`); `make bench-smoke` runs the smallest "
        "scenarios for agentrun only.",
        "",
        "## Machine and settings",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, "
        f"Python {m['python']}.",
        "- Versions: " + _versions(meta["versions"]) + ".",
        f"- Emulator (`agentrun emulator --tls`, its own process): queue {emu['queue_delay']} s, "
        f"run {emu['run_duration']} s, one delta every {emu['delta_interval']} s (a ~25-word "
        "reply, so ~0.25 s of streaming); TLS with a generated CA for every client, because "
        "the official SDK refuses bearer tokens over plain HTTP. Reset before each run.",
        f"- Each client runs in its own process, one at a time; agentrun's `pool_limit` is "
        f"{s['pool_limit']} (the default). Static bearer token (the emulator's key) for every "
        "client, except *agentrun auto, SP cold* (service-principal credentials, nothing warm).",
        f"- Warm-up: {s['warmup']}. All `n` invocations start at once (`asyncio` tasks; the "
        "sync wrapper: one thread each, at most 1,000 threads).",
        "- Continued threads: the harness first creates `n` threads holding one exchange; each "
        "invocation adds a message and runs. LiteLLM 1.110.2 cannot continue a thread (its "
        "`thread_id` is dropped into `extra_body`), so it has no rows there.",
        "",
        "Clients:",
        "",
    ]
    used = {r["client"] for r in results}
    for name, c in meta["clients"].items():
        if name in used:
            out.append(f"- **{c['label']}**: {c['note']}")
    out += [
        "",
        "Columns: *wall s* from the start of the first invocation to the last result; *CPU "
        "ms/inv* user+sys CPU of the client process during that time, per invocation; *peak "
        "RSS* of the client process; *mem KB/inv* RSS growth during the run per invocation; "
        "*req/inv* Agents API requests the emulator served per invocation; *conns* TCP+TLS "
        "connections the client opened during the run (a warm client keeps its warm-up "
        "connection); *peak conns* most connections open at once (the harness's own stats "
        "connection may add one); *tokens* token requests since the process started; *lag* "
        "when the caller held the result minus when the emulator completed the run; "
        "*latency* per invocation, start to result; *+TTFT* when the caller saw the first "
        "text delta minus when the emulator sent it.",
        "",
    ]
    for note in meta.get("notes", []):
        out.append(f"> {note}")
        out.append("")
    out += ["## Targets", "", *targets(results, s["pool_limit"]), ""]
    out += [
        "## Chart",
        "",
        "![Client CPU per invocation](../benchmarks/results/chart.svg)",
        "",
    ]
    for kind, n in scenarios(results):
        rows = [r for r in results if (r["kind"], r["n"]) == (kind, n)]
        title = "1 invocation" if n == 1 else f"{n:,} concurrent invocations"
        out += [f"## {title}, {KIND_TITLE[kind]}", ""]
        out += scenario_table(rows)
        out.append("")
        ratios = ratio_table(rows)
        if ratios:
            out += [*ratios, ""]
        extra = []
        for r in rows:
            if r.get("modes") and len(r["modes"]) > 1:
                extra.append(f"{r['label']} used modes {r['modes']}.")
            if r.get("errors"):
                extra.append(f"{r['label']} errors: {r['errors']}.")
            if r.get("emulator_cpu_s") is not None and r.get("wall_s"):
                busy = r["emulator_cpu_s"] / r["wall_s"]
                if busy > 0.8:
                    extra.append(
                        f"{r['label']}: the emulator was busy {busy:.0%} of the wall time "
                        "(its core was the bottleneck)."
                    )
        if extra:
            out += ["Notes: " + " ".join(extra), ""]
    out += [
        "## Requests per route",
        "",
        "| client | scenario | requests by route |",
        "|---|---|---|",
    ]
    for r in results:
        if "failed" in r or r["n"] != 100:
            continue
        routes = ", ".join(
            f"{k}: {v / r['n']:g}" for k, v in sorted(r["requests_by_route"].items())
        )
        out.append(f"| {r['label']} | {r['n']} {KIND_TITLE[r['kind']]} | {routes} |")
    out.append("")
    profiles = data.get("profiles") or {}
    if profiles:
        out += ["## Profiles (py-spy attached for the measured phase only; idle waits dropped)", ""]
        for key, p in profiles.items():
            if "self" not in p:
                out += [f"- {key}: {p}", ""]
                continue
            out += [
                f"### {key} ({p['samples']:,} samples)",
                "",
                "By area (self time): "
                + ", ".join(f"{name} {pct}%" for name, pct in p["by_area"][:8]),
                "",
                "| top self time | % | top inclusive time | % |",
                "|---|---:|---|---:|",
            ]
            for (a, ap), (b, bp) in zip(p["self"][:12], p["inclusive"][:12], strict=False):
                out.append(f"| `{a}` | {ap} | `{b}` | {bp} |")
            out.append("")
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text().strip(), ""]
    return "\n".join(out)


def write(data: dict[str, Any], doc: pathlib.Path, chart: pathlib.Path) -> None:
    chart.write_text(svg_chart(data["results"]))
    doc.write_text(render(data))
