"""The processes a benchmark starts and measures: servers that log their port, a throwaway
``redis-server``, free loopback ports, and CPU time read from /proc (a process, or a
process and all its descendants, as ``nba serve --workers N`` runs)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process that logs `listening on 127.0.0.1:PORT`; stopped with SIGTERM."""

    def __init__(self, command: list[str], name: str):
        self.name = name
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=self.log, env=env, cwd=str(REPO))
        self.port = self._wait_port()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.log.seek(0)
            match = re.search(rb"listening on 127\.0\.0\.1:(\d+)", self.log.read())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        output = self.output()
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{output}")

    def output(self) -> str:
        """What the process has logged so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class ThrowawayRedis:
    """``redis-server`` on a free loopback port, nothing on disk; stopped on exit.
    ``server`` is the path of the executable (default: ``redis-server`` on the PATH)."""

    def __init__(self, server: str | None = None):
        self.server = server
        self.dir = tempfile.mkdtemp(prefix="nba-bench-redis-")
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> "ThrowawayRedis":
        server = self.server or shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_until_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_until_ready(self) -> None:
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 on), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None elsewhere."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and len(fields) > 1 and fields[1].isdigit():
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, waiting = [], [pid]
    while waiting:
        current = waiting.pop()
        found.append(current)
        waiting += children.get(current, [])
    return found


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time of ``pid`` and each of its descendants, by pid (the
    processes that are gone by the time /proc is read are left out)."""
    times = {}
    for member in descendants(pid):
        cpu = process_cpu_seconds(member)
        if cpu is not None:
            times[member] = cpu
    return times


def own_cpu_seconds() -> float:
    """This process's CPU time (user and system), in seconds."""
    times = os.times()
    return times.user + times.system
