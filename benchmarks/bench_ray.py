"""The Ray row of `make bench`: the same batch through `agentrun batch` in one process and
through `agentrun batch --ray` (a local Ray, 2 actors), against one emulator.

    .venv/bin/python benchmarks/bench_ray.py              # 20,000 calls each (make bench)
    .venv/bin/python benchmarks/bench_ray.py --n 500      # a quick check

Both read the same input file and write the same output format; the figure is wall time
from start to the last line written (the Ray one includes starting Ray and its actors).
The emulator runs in its own process with the timings of bench.py; everything is on
127.0.0.1. Needs agentrun[ray]. Results: printed, and written to results/ray.json (unless
--no-save).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
TIMING = {"queue_delay": 0.05, "run_duration": 1.0, "delta_interval": 0.01}


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "agentrun.cli", "emulator", "--port", "0"]
    cmd += ["--queue-delay", str(TIMING["queue_delay"]), "--run-duration"]
    cmd += [str(TIMING["run_duration"]), "--delta-interval", str(TIMING["delta_interval"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ready: "):
            return proc, line.split(" ", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the emulator did not start")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def run_batch(
    endpoint: str, inp: pathlib.Path, out: pathlib.Path, concurrency: int, ray: bool
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "agentrun.cli", "batch", str(inp), "-o", str(out)]
    cmd += ["--api-base", endpoint, "--api-key", "emulator-key", "--agent", "asst_abc123"]
    cmd += ["--concurrency", str(concurrency), "--connections", str(concurrency)]
    cmd += ["--progress", "none"]
    if ray:
        cmd += ["--ray", "--ray-actors", "2"]
    t = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
    wall = time.monotonic() - t
    with open(out, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    ok = sum(1 for r in lines if r.get("error") is None)
    result = {
        "client": "agentrun batch --ray (2 actors)" if ray else "agentrun batch (one process)",
        "n": len(inp.read_text(encoding="utf-8").splitlines()),
        "ok": ok,
        "lines": len(lines),
        "exit": done.returncode,
        "wall_s": round(wall, 2),
        "calls_per_s": round(ok / wall, 1) if wall > 0 else 0.0,
    }
    if done.returncode != 0:
        result["stderr"] = done.stderr[-2000:]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="calls per contender (20000)")
    ap.add_argument("--concurrency", type=int, default=1000, help="calls at once (1000)")
    ap.add_argument("--no-save", action="store_true", help="do not write results/ray.json")
    args = ap.parse_args(argv)
    emu, endpoint = start_emulator()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="agentrun-bench-ray-") as tmp:
            inp = pathlib.Path(tmp) / "in.jsonl"
            with open(inp, "w", encoding="utf-8") as f:
                for i in range(args.n):
                    f.write(json.dumps({"custom_id": f"q{i}", "prompt": f"What is {i} * 2?"}))
                    f.write("\n")
            for ray in (False, True):
                out = pathlib.Path(tmp) / f"out-{int(ray)}.jsonl"
                res = run_batch(endpoint, inp, out, args.concurrency, ray)
                results.append(res)
                print(
                    f"{res['client']:<34} n={res['n']:<6} ok={res['ok']:<6} "
                    f"wall={res['wall_s']:.2f}s {res['calls_per_s']:.0f} calls/s",
                    flush=True,
                )
                if "stderr" in res:
                    print(res["stderr"], file=sys.stderr)
    finally:
        emu.terminate()
        emu.wait(30)
    if not args.no_save:
        data = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "emulator": TIMING,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
            "results": results,
        }
        (HERE / "results" / "ray.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0 if all(r["ok"] == r["n"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
