"""``--workers N``: a parent that starts N serving processes on one port (SO_REUSEPORT),
passes signals on, and restarts the ones that crash."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time

from nba.engine.server.config import ServeConfig
from nba.engine.server.logs import configure_logging, log
from nba.engine.server.process import STOP_SIGNALS, run_process
from nba.engine.server.sockets import bind_socket

PARENT_SIGNALS = {*STOP_SIGNALS, signal.SIGHUP}  # the parent of workers takes these with sigtimedwait


def worker_main(config: ServeConfig, worker: int, ready) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_SIGNALS)
    configure_logging()
    settings = config.settings
    sock = bind_socket(settings.host, settings.port, reuse_port=True)
    sys.exit(run_process(config, worker=worker, sock=sock, ready=ready))


class Workers:
    """The parent of ``--workers N``: starts them, passes signals on, restarts crashed ones."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.ctx = multiprocessing.get_context("spawn")
        self.ready = self.ctx.Queue()
        self.procs: dict[int, multiprocessing.Process] = {}

    def start(self, worker: int) -> None:
        proc = self.ctx.Process(target=worker_main, args=(self.config, worker, self.ready), name=f"nba-worker-{worker}")
        proc.start()
        # multiprocessing's resource tracker unblocks SIGINT/SIGTERM when it starts: block them again
        signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
        self.procs[worker] = proc

    def wait_ready(self, signals: set) -> int:
        """Wait until every worker listens. 0: all ready; 2: one failed; -1: told to stop."""
        waiting = set(self.procs)
        while waiting:
            if signal.sigtimedwait(signals - {signal.SIGHUP}, 0) is not None:
                return -1
            try:
                kind, worker, detail = self.ready.get(timeout=0.1)
            except Exception:  # noqa: BLE001 - queue.Empty
                dead = [w for w in waiting if not self.procs[w].is_alive()]
                if dead:
                    log.error("worker %d exited before it was ready", dead[0])
                    return 2
                continue
            if kind == "failed":
                return 2
            waiting.discard(worker)
        return 0

    def signal_all(self, signum: int, except_pid: int | None = None) -> None:
        for proc in self.procs.values():
            if proc.pid != except_pid and proc.is_alive():
                os.kill(proc.pid, signum)

    def restart_dead(self) -> None:
        for worker, proc in list(self.procs.items()):
            if not proc.is_alive():
                log.error("worker %d (pid %d) exited with %s; starting it again", worker, proc.pid, proc.exitcode)
                self.start(worker)

    def stop(self) -> int:
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.config.settings.drain_timeout_s + 10
        codes = []
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
            codes.append(proc.exitcode)
        return 0 if all(code == 0 for code in codes) else 1


def run_workers(config: ServeConfig) -> int:
    signals = PARENT_SIGNALS
    settings = config.settings
    try:
        reserved = bind_socket(settings.host, settings.port, reuse_port=True)  # holds the port; never listens
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    port = reserved.getsockname()[1]
    config = config.replace(settings=settings.model_copy(update={"port": port}))
    if config.redis_url is None:
        log.warning("%d workers with the in-memory store: each worker keeps its own customer state", settings.workers)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    workers = Workers(config)
    try:
        for worker in range(settings.workers):
            workers.start(worker)
        started = workers.wait_ready(signals)
        if started != 0:
            workers.stop()
            return 0 if started < 0 else started
        log.info("listening on %s:%d (%d workers, pid %d)", settings.host, port, settings.workers, os.getpid())
        while True:
            info = signal.sigtimedwait(signals, 0.5)
            if info is None:
                workers.restart_dead()
            elif info.si_signo == signal.SIGHUP:
                workers.signal_all(signal.SIGHUP, except_pid=info.si_pid)
            else:
                log.info("stopping %d workers", settings.workers)
                return workers.stop()
    finally:
        reserved.close()
        while signal.sigtimedwait(signals, 0) is not None:
            pass  # a repeated stop signal is not passed on once the workers are stopped
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
