"""Who may talk to the server: protected mode, `--auth` tokens and roles, TLS.

INTERFACES.md "Security of the socket"; the user's side is docs/security.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl
from dataclasses import dataclass

from nba.engine.protocol import ROLE_OPS

ROLES = tuple(ROLE_OPS)


class AuthFileError(ValueError):
    """The `--auth` file cannot be used (its message never holds a token)."""


def is_loopback(peer) -> bool:
    """Whether a peer address (``transport.get_extra_info("peername")``) is on this machine:
    127.0.0.0/8, ::1, an IPv4-mapped loopback (::ffff:127.0.0.1), or a Unix socket."""
    if isinstance(peer, (str, bytes)) or peer is None:
        return isinstance(peer, (str, bytes))  # a Unix socket has a path (or "") for a peer
    if not isinstance(peer, tuple) or not peer:
        return False
    host = peer[0]
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@dataclass(frozen=True)
class Tokens:
    """The tokens of an `--auth` file and their roles."""

    entries: tuple[tuple[bytes, str], ...]  # (token, role)

    def role_of(self, token: str) -> str | None:
        """The role of ``token``, or None. Every token is compared, each in constant time
        (hmac.compare_digest), so the time taken says nothing of which one nearly matched."""
        given = token.encode("utf-8", "surrogatepass")
        found = None
        for known, role in self.entries:
            if hmac.compare_digest(given, known) and found is None:
                found = role
        return found


def load_tokens(path: str) -> Tokens:
    """Read an `--auth` file: one `ROLE TOKEN` a line; blank lines and lines starting with
    `#` are skipped. Raises AuthFileError naming the line, never showing a token."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthFileError(f"{path}: cannot read the auth file: {type(exc).__name__}") from None
    entries = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2:
            raise AuthFileError(f"{path}:{number}: expected 'ROLE TOKEN' (two words)")
        role, token = parts
        if role not in ROLE_OPS:
            raise AuthFileError(f"{path}:{number}: unknown role {role!r}; roles are {', '.join(ROLES)}")
        entries.append((token.encode("utf-8"), role))
    if not entries:
        raise AuthFileError(f"{path}: no tokens: every client would be refused")
    return Tokens(tuple(entries))


def server_tls_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """TLS for the socket: TLS 1.2 or later; client certificates required when a CA is given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
