"""Settings of the socket server (`nba serve`), checked once at the edge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nba.engine.events import DEFAULT_MAX_EVENT_AHEAD_S

DEFAULT_PORT = 7411
DEFAULT_MAX_FRAME_BYTES = 1 << 20  # 1 MiB


class ServerSettings(BaseModel):
    """Everything `nba serve` can be told, with sane defaults.

    Limits protect the server from its clients: a frame longer than ``max_frame_bytes``
    closes the connection; a connection with ``max_in_flight`` unanswered requests is not
    read from until some are answered (backpressure); a connection with nothing in flight
    and no bytes received for ``idle_timeout_s`` is closed; a frame whose first byte came in
    more than ``frame_timeout_s`` ago and is still not whole closes its connection (a client
    trickling a byte a second cannot hold a buffer forever); past ``max_connections`` open
    connections a new one is refused; past ``max_buffered_bytes`` of unfinished frames over
    all connections, the connection whose bytes went over is closed. Each of these answers
    the client with one error (see docs/server.md) before it closes.

    Security (docs/security.md): without ``auth_file`` only clients on loopback addresses
    are answered (protected mode); with it, each connection authenticates with a token of
    the file. ``tls_cert`` + ``tls_key`` put TLS on the socket; ``tls_client_ca`` then
    requires client certificates signed by that CA.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)  # 0: any free port (logged)
    workers: int = Field(1, ge=1, le=512)
    watch: bool = False
    watch_interval_s: float = Field(1.0, gt=0, le=3600)
    max_frame_bytes: int = Field(DEFAULT_MAX_FRAME_BYTES, ge=64, le=1 << 30)
    max_in_flight: int = Field(1024, ge=1, le=1 << 20)
    # With Redis: requests of all connections running against the store at once. Past it they
    # wait their turn, so that a read is not held up past the store's latency budget (1 ms) by
    # the event loop evaluating hundreds of other decisions (8 x ~50 us of CPU stays well under
    # it; the CPU, not Redis, bounds the throughput long before 8 concurrent round trips do).
    max_concurrency: int = Field(8, ge=1, le=1 << 16)
    idle_timeout_s: float = Field(300.0, gt=0)
    frame_timeout_s: float = Field(30.0, gt=0)  # a frame begun must be whole within this
    max_connections: int = Field(4096, ge=1, le=1 << 20)
    max_buffered_bytes: int = Field(64 << 20, ge=64)  # unfinished frames, over all connections
    drain_timeout_s: float = Field(30.0, ge=0)  # how long a stopping server waits for in-flight requests
    backlog: int = Field(1024, ge=1, le=65535)  # the listen queue (the kernel caps it at net.core.somaxconn)
    # An event whose time is later than the clock plus this is refused (`bad_event` on
    # `time`): the server decides on the wall clock (DSL.md, "The decision", step 1).
    max_event_ahead_s: float = Field(DEFAULT_MAX_EVENT_AHEAD_S, ge=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)  # Prometheus endpoint; None: off
    auth_file: str | None = None  # lines of `ROLE TOKEN`; None: protected mode (loopback clients only)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # client certificates required, signed by this CA

    @model_validator(mode="after")
    def _tls_complete(self) -> "ServerSettings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return self
