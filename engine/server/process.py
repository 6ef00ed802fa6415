"""One serving process: build the engine, start the server, handle signals, stop."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
from typing import Any

from nba.engine.server.config import ServeConfig
from nba.engine.server.lifecycle import Server
from nba.engine.server.logs import log
from nba.engine.server.security import AuthFileError, load_tokens
from nba.engine.server.sockets import loop_name, new_event_loop

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_process(
    config: ServeConfig, *, worker: int | None = None, sock: socket.socket | None = None, ready=None
) -> int:
    """Serve ``config`` in this process until SIGTERM/SIGINT; returns the exit code."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(serve(config, worker, sock, ready))


async def serve(config: ServeConfig, worker: int | None, sock: socket.socket | None, ready) -> int:
    settings = config.settings

    def failed(detail: str, code: int) -> int:
        if ready is not None:
            ready.put(("failed", worker, detail))
        return code

    try:
        tokens = load_tokens(settings.auth_file) if settings.auth_file is not None else None
    except AuthFileError as exc:
        log.error("not serving: %s", exc)
        return failed(str(exc), 2)
    try:
        engine = config.build_engine()
    except Exception as exc:  # noqa: BLE001 - report and exit, whatever went wrong
        log.error("the ruleset %s does not load; not serving:\n%s", config.rules_path, exc)
        return failed(str(exc), 2)
    if hasattr(engine, "max_event_ahead_s"):  # the server decides on the wall clock (tests' stand-ins need not)
        engine.max_event_ahead_s = settings.max_event_ahead_s
    gc.collect()
    gc.freeze()  # the loaded engine is not garbage: keep the cycle collector from scanning it again and again
    server = Server(
        engine,
        settings,
        rules_path=config.rules_path,
        blocking=config.inline,
        store=config.store,
        worker=worker,
        notify_parent_on_reload=worker is not None,
        tokens=tokens,
    )
    try:
        host, port = await server.start(sock)
    except (OSError, ValueError) as exc:  # the port, or a TLS certificate or key that cannot be used
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        await close_engine(engine)
        return failed(str(exc), 1)
    install_signals(server)
    log.info(
        "listening on %s:%d (rules %s, %s store, %s, pid %d%s%s%s%s)",
        host,
        port,
        config.rules_path,
        server.store,
        loop_name(asyncio.get_running_loop()),
        os.getpid(),
        f", worker {worker}" if worker is not None else "",
        ", TLS" if settings.tls_cert else "",
        ", auth" if tokens is not None else ", protected mode: loopback clients only",
        f", metrics on {server.metrics_address[0]}:{server.metrics_address[1]}" if server.metrics_address else "",
    )
    if ready is not None:
        ready.put(("ready", worker, os.getpid()))
    await server.wait_stopped()
    await close_engine(engine)
    return 0


def install_signals(server: Server) -> None:
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, server.reload_soon, "signal")


async def close_engine(engine: Any) -> None:
    close_async = getattr(engine, "close_async", None) or getattr(engine, "aclose", None)
    try:
        if close_async is not None:
            await close_async()
        elif hasattr(engine, "close"):
            engine.close()
    except Exception:  # noqa: BLE001
        log.exception("closing the engine failed")
