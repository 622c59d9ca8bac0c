"""Foundry Agents v2 (the Responses API) rows: agentrun beside LiteLLM's v2 route.

Run by `make bench` after the classic table (or alone: `python benchmarks/bench_v2.py`). The
same emulator child (`agentrun emulator --tls`, bench.py's timings) serves its preloaded v2
agent `general-assistant`; the same runners (runners/run_agentrun.py and, in .bench-venv,
runners/run_litellm.py) are given `agent: general-assistant`, so agentrun routes to v2 by the
name and LiteLLM takes its `azure_ai/agents/<name>` route. Each row counts the requests the
emulator answered on the `/openai/v1/...` routes during the measured phase, and the responses
created; the continued scenarios get conversations holding one earlier exchange.

The figures go to results/v2.json (or `--out`) and are printed as a table. LiteLLM rows need
.bench-venv (`make bench` creates it); without it they are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import bench  # this directory is on sys.path when run as a script

AGENT = "general-assistant"
SIZES = (1, 100)

#: (row name, runner, variant, venv is the peers', kinds)
ROWS: list[tuple[str, str, str, bool, tuple[str, ...]]] = [
    ("agentrun v2 stream", "run_agentrun.py", "stream", False, ("new", "continue")),
    ("agentrun v2 poll", "run_agentrun.py", "poll", False, ("new", "continue")),
    ("agentrun v2 acompletion", "run_agentrun.py", "acompletion", False, ("new", "continue")),
    ("LiteLLM v2", "run_litellm.py", "acompletion", True, ("new",)),
    ("LiteLLM v2 stream", "run_litellm.py", "stream", True, ("new",)),
]


def make_conversations(emu: bench.Emulator, n: int) -> list[str]:
    """`n` conversations holding one earlier exchange, for the continued scenarios."""
    path = "/" + emu.endpoint.split("/", 3)[3] + "/openai/v1/conversations"
    items = [
        {"type": "message", "role": "user", "content": "Hello, my name is Ada."},
        {"type": "message", "role": "assistant", "content": "Nice to meet you, Ada!"},
    ]
    return [emu.call("POST", path, {"items": items}, auth=True)["id"] for _ in range(n)]


def v2_requests(stats: dict[str, Any]) -> dict[str, int]:
    return {
        route: sum(by.values()) for route, by in stats["requests"].items() if "/openai/v1/" in route
    }


def run_row(
    emu: bench.Emulator,
    runner: str,
    variant: str,
    peer: bool,
    kind: str,
    n: int,
    workdir: pathlib.Path,
) -> dict[str, Any]:
    """One runner process on (`kind`, `n`): its figures and the emulator's v2 request counts."""
    emu.reset()
    tag = f"v2-{runner}-{variant}-{kind}-{n}"
    threads_file = ""
    if kind == "continue":
        threads_path = workdir / f"{tag}.threads"
        threads_path.write_text("\n".join(make_conversations(emu, n)) + "\n")
        threads_file = str(threads_path)
    cfg = {
        "variant": variant,
        "endpoint": emu.endpoint,
        "api_key": emu.api_key,
        "ca_path": str(emu.ca_path),
        "agent": AGENT,
        "n": n,
        "threads_file": threads_file,
        "timeout": 120.0,
        "pool_limit": bench.POOL_LIMIT,
        "warmup": True,
        "out": str(workdir / f"{tag}.out.json"),
    }
    cfg_path = workdir / f"{tag}.json"
    cfg_path.write_text(json.dumps(cfg))
    env = bench.clean_env()
    if not peer:
        env["PYTHONPATH"] = str(bench.ROOT)
    python = str(bench.peers_python()) if peer else sys.executable
    err_path = workdir / f"{tag}.stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [python, str(bench.RUNNERS / runner), str(cfg_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=str(bench.RUNNERS),
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=bench._reader, args=(proc.stdout, lines), daemon=True).start()
        try:
            if bench._wait_line(lines, "READY", 180) is None:
                raise RuntimeError("the runner never became ready")
            before = emu.stats()
            proc.stdin.write("GO\n")
            proc.stdin.flush()
            if bench._wait_line(lines, "DONE", 300) is None:
                raise RuntimeError("the runner did not finish in time")
            after = emu.stats()
            proc.wait(timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            proc.kill()
            proc.wait(timeout=30)
            tail = err_path.read_text()[-1500:] if err_path.exists() else ""
            return {"failed": f"{exc}; stderr tail: {tail}"}
    out = json.loads(pathlib.Path(cfg["out"]).read_text())
    records = out["records"]
    ok = [r for r in records if r["ok"]]
    was, now = v2_requests(before), v2_requests(after)
    by_route = {r: c - was.get(r, 0) for r, c in now.items() if c - was.get(r, 0)}
    latency = sorted(r["done_ms"] - r["start_ms"] for r in ok)
    classic = sum(
        sum(by.values()) - sum(before["requests"].get(route, {}).values())
        for route, by in after["requests"].items()
        if "/threads" in route
    )
    return {
        "ok": len(ok),
        "errors": sorted({r["error"] for r in records if not r["ok"]})[:3],
        "wall_s": round(out["wall_s"], 3),
        "cpu_ms_per_inv": round(out["cpu_s"] * 1000 / n, 3),
        "requests_per_inv": round(sum(by_route.values()) / n, 3),
        "requests_by_route": by_route,
        "responses_created": after["responses_created"] - before["responses_created"],
        "classic_requests": classic,
        "latency_p50_ms": round(latency[len(latency) // 2], 1) if latency else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="invocation counts")
    ap.add_argument("--no-peers", action="store_true", help="skip the LiteLLM rows")
    ap.add_argument("--out", type=pathlib.Path, default=bench.RESULTS / "v2.json")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    peers = not args.no_peers and bench.peers_python().exists()
    notes = [] if peers or args.no_peers else ["LiteLLM rows skipped: no .bench-venv"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agentrun-bench-v2-") as tmp:
        workdir = pathlib.Path(tmp)
        emu = bench.Emulator(workdir)
        try:
            for name, runner, variant, peer, kinds in ROWS:
                if peer and not peers:
                    continue
                for kind in kinds:
                    for n in sizes:
                        started = time.monotonic()
                        res = run_row(emu, runner, variant, peer, kind, n, workdir)
                        res.update(row=name, kind=kind, n=n)
                        rows.append(res)
                        print(line(res, time.monotonic() - started), flush=True)
        finally:
            emu.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"agent": AGENT, "timing": bench.TIMING, "notes": notes, "rows": rows}, indent=1)
        + "\n"
    )
    for note in notes:
        print("note: " + note)
    failed = [r for r in rows if "failed" in r or r["ok"] != r["n"]]
    return 1 if failed else 0


def line(res: dict[str, Any], took: float) -> str:
    head = f"{res['row']:<24} {res['kind']:<8} n={res['n']:<5}"
    if "failed" in res:
        return head + " FAILED: " + res["failed"][:300]
    return (
        head + f" ok={res['ok']:<5} req/inv={res['requests_per_inv']:<6} "
        f"responses={res['responses_created']:<5} wall={res['wall_s']:.2f}s "
        f"p50={res['latency_p50_ms']}ms cpu/inv={res['cpu_ms_per_inv']}ms ({took:.1f} s)"
    )


if __name__ == "__main__":
    sys.exit(main())
