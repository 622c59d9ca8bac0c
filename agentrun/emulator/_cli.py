"""`agentrun emulator`: run the local Agent Service emulator until SIGINT or SIGTERM.

Prints the endpoint, the credentials a client can use and, last, `ready: <endpoint>`.
Defaults: static API key `emulator-key`, client id `agentrun-emulator`, client secret
`emulator-secret`, tenant `emulator-tenant`.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
from typing import Any

import attrs

from agentrun._cli_common import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, stop_on_signals

from ._server import Emulator
from ._settings import EmulatorSettings, SettingsError

__all__ = ["configure", "main"]

_TIMING_FLAGS = ("queue_delay", "run_duration", "delta_interval")
_FAULT_FLAGS = (
    "rate_429",
    "rate_500",
    "rate_503",
    "rate_drop",
    "rate_stream_cut",
    "rate_run_failed",
    "rate_run_expired",
    "retry_after",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080; 0 picks a free one)")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    parser.add_argument("--ca-out", type=pathlib.Path, help="with --tls: write the CA PEM here")
    parser.add_argument("--config", type=pathlib.Path, help="YAML settings file")
    parser.add_argument(
        "--api-key",
        action="append",
        help="static bearer token the API accepts (repeatable; default emulator-key)",
    )
    parser.add_argument("--client-id", help="client id the token endpoint accepts")
    parser.add_argument("--client-secret", help="client secret the token endpoint accepts")
    parser.add_argument("--tenant-id", help="tenant in the token endpoint's path")
    parser.add_argument("--seed", type=int, help="seed for fault injection (0)")
    timing = parser.add_argument_group("latency (seconds)")
    for name in _TIMING_FLAGS:
        timing.add_argument("--" + name.replace("_", "-"), type=float, metavar="S")
    faults = parser.add_argument_group("fault injection (rates 0..1)")
    for name in _FAULT_FLAGS:
        metavar = "S" if name == "retry_after" else "R"
        faults.add_argument("--" + name.replace("_", "-"), type=float, metavar=metavar)


def build_settings(args: argparse.Namespace) -> EmulatorSettings:
    settings = EmulatorSettings.from_yaml(args.config) if args.config else EmulatorSettings()
    timing = {n: getattr(args, n) for n in _TIMING_FLAGS if getattr(args, n) is not None}
    faults = {n: getattr(args, n) for n in _FAULT_FLAGS if getattr(args, n) is not None}
    changes: dict[str, Any] = {}
    if timing:
        changes["timing"] = attrs.evolve(settings.timing, **timing)
    if faults:
        changes["faults"] = attrs.evolve(settings.faults, **faults)
    if args.api_key:
        changes["api_keys"] = tuple(args.api_key)
    for name in ("client_id", "client_secret", "tenant_id", "seed"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    return attrs.evolve(settings, **changes) if changes else settings


async def _serve(emu: Emulator) -> None:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        async with emu:
            s = emu.settings
            print(f"agentrun emulator: Azure AI Foundry Agent Service at {emu.url}")
            print(f"  endpoint (api_base):  {emu.endpoint}")
            print(f"  static API key:       {emu.api_key}  (Authorization: Bearer <key>)")
            print(f"  token endpoint:       {emu.url}/{s.tenant_id}/oauth2/v2.0/token")
            print(f"  authority:            {emu.authority}")
            print(f"  tenant id:            {s.tenant_id}")
            print(f"  client id:            {s.client_id}")
            print(f"  client secret:        {s.client_secret}")
            if emu.ca_path is not None:
                print(f"  CA certificate:       {emu.ca_path}")
            agents = ", ".join(a.id for a in s.all_agents())
            print(f"  agents:               {agents}")
            print(f"ready: {emu.endpoint}", flush=True)
            await stop.wait()


def main(args: argparse.Namespace) -> int:
    try:
        settings = build_settings(args)
    except SettingsError as exc:
        print(f"agentrun emulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.ca_out and not args.tls:
        print("agentrun emulator: --ca-out needs --tls", file=sys.stderr)
        return EXIT_USAGE
    emu = Emulator(settings, host=args.host, port=args.port, tls=args.tls, ca_out=args.ca_out)
    try:
        asyncio.run(_serve(emu))
    except OSError as exc:
        print(f"agentrun emulator: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    print("agentrun emulator: stopped", flush=True)
    return EXIT_OK
