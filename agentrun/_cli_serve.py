"""`agentrun serve --config config.yaml`: the OpenAI-compatible proxy, until SIGTERM or SIGINT.

Prints `ready: <url>` on stdout once it listens (handy for scripts), logs one line per request
on stderr. On SIGTERM or SIGINT it stops accepting connections, lets in-flight requests finish
for `--grace` seconds, then cancels the rest (their runs are cancelled on the service).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import sys

from agentrun._cli_common import (
    EXIT_AUTH_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    stop_on_signals,
)

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, type=pathlib.Path, help="LiteLLM-style config.yaml"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=4000, help="port (4000; 0 picks a free one)")
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds in-flight requests get to finish before they are cancelled (30)",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen on a non-loopback address without general_settings.master_key",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a connection gets to send complete request headers, else 408 (10)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a request body gets to arrive, else 408 (60)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        metavar="N",
        help="open connections at most; more are answered 503 and closed (1024)",
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the config and exit without serving"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level on stderr (info: one line per request)",
    )


def main(args: argparse.Namespace) -> int:
    from agentrun._errors import ConfigurationError
    from agentrun._proxy_config import load_config

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # azure-identity's HTTP logging dumps every header of each token request at INFO: keep
    # the log one line per request (its warnings and errors still show; --log-level debug
    # shows everything).
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("azure").setLevel(logging.WARNING)
    if args.grace < 0:
        print("agentrun serve: --grace must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    for flag, value in (
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
    ):
        if not value > 0:
            print(f"agentrun serve: {flag} must be > 0", file=sys.stderr)
            return EXIT_USAGE
    if args.max_connections < 1:
        print("agentrun serve: --max-connections must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.config)
    except ConfigurationError as exc:
        print(f"agentrun serve: {exc}", file=sys.stderr)
        return EXIT_AUTH_CONFIG
    if args.check:
        names = ", ".join(d.model_name for d in config.deployments)
        print(f"{args.config}: OK, {len(config.deployments)} model(s): {names}")
        return EXIT_OK
    try:
        return asyncio.run(_serve(config, args))
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C during shutdown
        return EXIT_INTERRUPTED


async def _serve(config: object, args: argparse.Namespace) -> int:
    from agentrun._errors import ConfigurationError
    from agentrun._proxy import ProxyServer
    from agentrun._proxy_config import ConfigError, ProxyConfig

    assert isinstance(config, ProxyConfig)
    log = logging.getLogger("agentrun.proxy")
    server = ProxyServer(
        config,
        host=args.host,
        port=args.port,
        grace=args.grace,
        allow_unauthenticated=args.allow_unauthenticated,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
    )
    try:
        await server.start()
    except ConfigError as exc:
        print(f"agentrun serve: {exc}", file=sys.stderr)
        return EXIT_AUTH_CONFIG
    except ConfigurationError as exc:
        print(f"agentrun serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"agentrun serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED

    stop = asyncio.Event()
    names = ", ".join(d.model_name for d in config.deployments)
    auth = "master key required" if config.master_key else "no master key"
    try:
        with stop_on_signals(stop):
            log.info("serving %s on %s (%s)", names, server.url, auth)
            print(f"ready: {server.url}", flush=True)
            await stop.wait()
            log.info("signal received: stopping (grace %gs)", args.grace)
    finally:
        await server.stop()
    log.info("stopped")
    return EXIT_OK
