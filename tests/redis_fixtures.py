"""Throwaway ``redis-server`` processes for the tests: one server, or a cluster of three
masters each with a replica (a short ``cluster-node-timeout``, so that a killed master's
replica is promoted within seconds).

Every server listens on 127.0.0.1 on a free port (never 6379), keeps nothing on disk
(``--save "" --appendonly no``, a temporary directory) and is stopped by the fixture's
finalizer, also when the test fails. Tests are skipped when ``redis-server`` is missing.

Import the fixtures into a test module with ``from redis_fixtures import ...``.
"""

from __future__ import annotations

import random
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from polling import wait_until

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 15.0
CLUSTER_NODE_TIMEOUT_MS = 1000

needs_redis = pytest.mark.skipif(REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server is not installed")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if port != 6379 and port_is_free(port) and port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def pack(*args: str) -> bytes:
    return f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(arg.encode())}\r\n".encode() + arg.encode() + b"\r\n" for arg in args
    )


def send_command(
    port: int, *args: str, timeout: float = 1.0, password: str | None = None, ssl_context: ssl.SSLContext | None = None
) -> bytes:
    """One command over a plain (or TLS) socket, after ``AUTH password`` when given; the raw
    reply (enough to check for +PONG)."""
    with socket.create_connection((HOST, port), timeout=timeout) as conn:
        if ssl_context is not None:
            conn = ssl_context.wrap_socket(conn, server_hostname=HOST)
        if password is not None:
            conn.sendall(pack("AUTH", password))
            reply = conn.recv(65536)
            if not reply.startswith(b"+OK"):
                return reply
        conn.sendall(pack(*args))
        return conn.recv(65536)


def tls_supported() -> bool:
    """Whether this redis-server was built with TLS (Debian's is). Asked to listen with TLS
    but given no certificate, a TLS build complains about the missing file and exits; a
    build without TLS rejects ``tls-port`` itself as a bad directive."""
    if REDIS_SERVER is None:
        return False
    try:
        probe = subprocess.run(
            [REDIS_SERVER, "--port", "0", "--tls-port", "0"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return "Bad directive" not in probe.stdout + probe.stderr


REDIS_HAS_TLS = tls_supported()
needs_redis_tls = pytest.mark.skipif(not REDIS_HAS_TLS, reason="redis-server is not installed or has no TLS")


class RedisServer:
    """One ``redis-server`` process on a loopback port; can be stopped and started again.

    Secured on request: ``password`` (``--requirepass``, the default user's), ``users``
    (ACL rules, one string per user as after ``ACL SETUSER``: ``"name on >secret ~nba:* +get"``)
    and ``tls`` (a ``certificates.Certificates``: TLS only, ``--port 0 --tls-port PORT``;
    client certificates required when ``tls_client_certificates``). ``url(...)`` makes the
    URL a client gives to reach it.
    """

    def __init__(
        self,
        port: int | None = None,
        cluster: bool = False,
        node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS,
        *,
        password: str | None = None,
        users: tuple[str, ...] = (),
        tls=None,
        tls_client_certificates: bool = False,
    ):
        self.port = port or free_port()
        self.cluster = cluster
        self.node_timeout_ms = node_timeout_ms
        self.password = password
        self.users = users
        self.tls = tls
        self.tls_client_certificates = tls_client_certificates
        self.dir = Path(tempfile.mkdtemp(prefix=f"nba-redis-{self.port}-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_for(password=self.password)

    def url_for(self, user: str | None = None, password: str | None = None, **query: str) -> str:
        """``redis://`` (``rediss://`` with TLS, trusting the test CA unless ``query`` says
        otherwise) with the user and password given."""
        credentials = ""
        if user is not None or password is not None:
            credentials = (
                quote(user or "", safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
            )
        if self.tls is not None:
            query = {"ssl_ca_certs": str(self.tls.ca), **query}
            if self.tls_client_certificates:
                query = {"ssl_certfile": str(self.tls.client_cert), "ssl_keyfile": str(self.tls.client_key), **query}
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{credentials}{HOST}:{self.port}/0" + (f"?{urlencode(query)}" if query else "")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def admin_ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return context

    def command(self, *args: str) -> bytes:
        """One command as the default user (the admin), over TLS when the server has it."""
        return send_command(self.port, *args, password=self.password, ssl_context=self.admin_ssl_context())

    def command_line(self) -> list[str]:
        port = ["--port", "0", "--tls-port", str(self.port)] if self.tls is not None else ["--port", str(self.port)]
        args = [
            REDIS_SERVER,
            *port,
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
            "--daemonize",
            "no",
        ]
        if self.cluster:
            # full coverage off: the shards still served answer while a failed master's replica
            # is being promoted (docs/redis-cluster.md)
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / "nodes.conf"),
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--cluster-require-full-coverage",
                "no",
            ]
        if self.password is not None:
            args += ["--requirepass", self.password]
        for rules in self.users:
            args += ["--user", *rules.split()]
        if self.tls is not None:
            args += [
                "--tls-cert-file",
                str(self.tls.server_cert),
                "--tls-key-file",
                str(self.tls.server_key),
                "--tls-ca-cert-file",
                str(self.tls.ca),
                "--tls-auth-clients",
                "yes" if self.tls_client_certificates else "no",
            ]
        return args

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(self.command_line(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_until_ready()
        return self

    def wait_until_ready(self) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited: {self.log_tail()}")
            return self.command("PING").startswith(b"+PONG")

        try:
            wait_until(
                answers, f"redis-server on port {self.port} to start", timeout_s=STARTUP_TIMEOUT_S, ignoring=(OSError,)
            )
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the process (SIGKILL: like a crash) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def flush(self) -> None:
        self.command("FLUSHALL")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def info(self, section: str) -> dict[str, str]:
        text = self.command("INFO", section).decode(errors="replace")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("$"))

    def is_master(self) -> bool:
        return self.info("replication").get("role") == "master"

    def log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-2000:]
        except OSError:
            return ""


class RedisCluster:
    """``masters`` ``redis-server --cluster-enabled yes``, each with ``replicas`` replicas,
    joined by ``redis-cli --cluster create``; ``nodes`` are all of them, ``masters`` the
    ones that are masters now (a failover changes which)."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS):
        self.replicas = replicas
        self.nodes = [
            RedisServer(cluster=True, node_timeout_ms=node_timeout_ms) for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return self.masters[0].url

    @property
    def masters(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.running and node.is_master()]

    def start(self) -> "RedisCluster":
        try:
            for node in self.nodes:
                node.start()
            self.create()
            self.wait_until_ok()
        except BaseException:
            self.cleanup()
            raise
        return self

    def create(self) -> None:
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def is_ok(self) -> bool:
        """Every running node says the cluster is ok, knows every running replica as one, and
        every replica is in sync with its master."""
        running = [node for node in self.nodes if node.running]
        replicas = sum(1 for node in running if not node.is_master())
        if replicas < len(self.nodes) // (1 + self.replicas) * self.replicas - (len(self.nodes) - len(running)):
            return False
        for node in running:
            if b"cluster_state:ok" not in send_command(node.port, "CLUSTER", "INFO"):
                return False
            known = [
                line
                for line in send_command(node.port, "CLUSTER", "NODES").decode().splitlines()
                if " slave " in line or ",slave " in line
            ]
            if sum(1 for line in known if "fail" not in line) != replicas:
                return False
            replication = node.info("replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def wait_until_ok(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        wait_until(self.is_ok, "the redis cluster to reach cluster_state:ok", timeout_s=timeout_s, interval_s=0.05)

    def flush(self) -> None:
        for node in self.masters:
            node.flush()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


@pytest.fixture(scope="module")
def redis_server():
    """A module-wide server; use ``redis_url`` for a flushed one per test."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server):
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis_server():
    """A server for this test alone (fault tests stop and restart it)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def redis_cluster():
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server is not installed")
    cluster = RedisCluster()
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()


@pytest.fixture
def redis_cluster_url(redis_cluster):
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def own_redis_cluster():
    """A cluster for this test alone (fault tests kill its masters and move its slots)."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server is not installed")
    cluster = RedisCluster()
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()
