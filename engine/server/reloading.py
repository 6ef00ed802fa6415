"""Reloading the ruleset: on the `reload` op, SIGHUP, or a change under the path (--watch).

Only the path the server was started with is ever loaded: no request names a path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from nba.dsl.loader import load_ruleset_async
from nba.engine.protocol import LOAD_FAILED, error_response, ok_response
from nba.engine.server.logs import log

if TYPE_CHECKING:
    from nba.engine.server.lifecycle import Server

RELOAD_TIMEOUT_S = 600.0  # a child that loads for longer than this is stopped; the old ruleset keeps serving


class Reloader:
    def __init__(self, server: "Server", rules_path: str | None, notify_parent: bool):
        self.server = server
        self.rules_path = rules_path
        self.notify_parent = notify_parent  # a worker tells its parent, which tells the others
        self._lock = asyncio.Lock()
        self._next: asyncio.Task | None = None  # the load that requests arriving now will share
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nba-reload")

    def _load(self) -> None:
        engine = self.server.engine
        if self.rules_path is None:
            engine.reload()
        else:
            engine.reload(self.rules_path)

    async def _load_off_the_loop(self, loop) -> None:
        """Load in a child process and swap the ruleset in (issue 21, item 8): a compile in a
        thread holds the interpreter lock for seconds on a big ruleset and stalls every
        client; the child's result is linked here in short steps between the loop's turns.
        An engine that cannot take a ruleset loaded elsewhere (no ``use``) reloads itself
        in a thread."""
        engine = self.server.engine
        path = self.rules_path or getattr(engine, "path", None)
        if hasattr(engine, "use") and path is not None:
            engine.use(await load_ruleset_async(path, timeout=RELOAD_TIMEOUT_S), path)
        else:
            await loop.run_in_executor(self._executor, self._load)

    async def reload(self, request_id: Any = None, origin: str = "op") -> dict:
        """Load the ruleset again and swap it in; on failure the old one keeps serving.

        Requests that arrive while a load runs share the one load that starts after it
        (which reads the files as they are after every one of them was sent): 300
        pipelined `reload`s cost two loads, not 300, so they cannot starve other clients.
        """
        task = self._next
        if task is None:
            task = self._next = asyncio.get_running_loop().create_task(self._load_after_current(origin))
        error = await asyncio.shield(task)
        if error is not None:
            return error_response(request_id, LOAD_FAILED, error)
        return ok_response(request_id, "reloaded", {"reloads": self.server.stats.reloads})

    async def _load_after_current(self, origin: str) -> str | None:
        """One load; returns None, or the reason it failed."""
        stats = self.server.stats
        async with self._lock:
            self._next = None  # from now on a new request needs a load of its own
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                await self._load_off_the_loop(loop)
            except Exception as exc:  # noqa: BLE001 - any failure to load leaves the old ruleset
                stats.reloads_failed += 1
                log.error("reload (%s) failed; the old ruleset keeps serving:\n%s", origin, exc)
                return str(exc)
            stats.reloads += 1
            log.info("reloaded %s (%s) in %.1f ms", self.rules_path, origin, (time.perf_counter() - started) * 1e3)
        if origin == "op" and self.notify_parent:
            os.kill(os.getppid(), signal.SIGHUP)  # the parent passes it on to the other workers
        return None

    async def watch(self, last: tuple, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            current = await loop.run_in_executor(None, rules_signature, self.rules_path)
            if current != last:
                last = current
                await self.reload(origin="watch")

    def close(self) -> None:
        self._executor.shutdown(wait=False)


def rules_signature(path: str) -> tuple:
    """What changes when a `.rules` file under ``path`` is added, removed or written."""
    entries = []
    if os.path.isfile(path):
        files = [path]
    else:
        files = [
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names if name.endswith(".rules")
        ]
    for name in sorted(files):
        try:
            st = os.stat(name)
        except OSError:
            continue
        entries.append((name, st.st_mtime_ns, st.st_size))
    return tuple(entries)
