"""The server's logger, its setup, and the limit on log lines a client can cause."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("nba.server")


class LogLimiter:
    """At most ``per_second`` log lines a second for errors a client can cause at will
    (bad requests, bad frames, refused connections, failed decisions with a traceback):
    a client sending garbage must not fill the disk nor slow the loop with logging."""

    def __init__(self, per_second: int = 50, clock=time.monotonic) -> None:
        self.per_second = per_second
        self.clock = clock
        self._second = 0
        self._lines = 0
        self._dropped = 0

    def allow(self) -> bool:
        now = int(self.clock())
        if now != self._second:
            if self._dropped:
                log.warning("%d more error lines were not logged in the last second", self._dropped)
            self._second, self._lines, self._dropped = now, 0, 0
        if self._lines < self.per_second:
            self._lines += 1
            return True
        self._dropped += 1
        return False


def configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s nba[%(process)d] %(levelname)s %(message)s",
        )
    elif root.level > logging.INFO or root.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def peer_name(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
