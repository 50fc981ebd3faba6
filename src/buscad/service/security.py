"""Who may talk to the service, and from where: API keys, the Host allow-list and the Origin check.

- **API keys** (``Authorization: Bearer <key>``) protect ``/v1/*``. Keys come from a file
  (``--api-keys-file``) or the ``BUSCAD_API_KEYS`` environment variable: one key per line (or separated by
  commas/whitespace in the variable); ``#`` starts a comment. A line ``sha256:<64 hex digits>`` is the
  SHA-256 of a key, so the server need not hold the key itself. Keys are kept only as SHA-256 digests and
  a presented key is hashed and compared with *every* digest by :func:`hmac.compare_digest` (constant
  time, no early exit). Keys are random tokens (``secrets.token_urlsafe(32)``, :func:`new_key`), so a fast
  hash is enough: there is nothing to brute-force.
- **Host allow-list** against DNS rebinding: a page on ``evil.example`` that re-points its name to
  127.0.0.1 still sends ``Host: evil.example`` and is refused (400).
- **Origin check** against cross-site requests: a browser request whose ``Origin`` is not this server's
  own origin (or a configured one) is refused (403) before its body is read, so a page on any site
  cannot make a visitor's browser upload to the service.

The page (``/``, ``/static``), ``/healthz``, ``/readyz``, ``/docs`` and ``/openapi.json`` hold nothing
secret and stay open, so probes work and the page can ask for the key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buscad.errors import ConfigError

ENV_KEYS = "BUSCAD_API_KEYS"
MIN_KEY_LENGTH = 16
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
PROTECTED_PREFIX = "/v1/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("buscad.service.access")


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """``sha256:<hex>``: what a key file may hold instead of the key."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKeys:
    """SHA-256 digests of the accepted keys; empty means no authentication."""

    digests: tuple[bytes, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.digests)

    @classmethod
    def parse(cls, entries: Iterable[str], where: str) -> ApiKeys:
        digests = []
        for entry in entries:
            entry = entry.split("#", 1)[0].strip()
            if not entry:
                continue
            match = HASHED.fullmatch(entry)
            if match:
                digests.append(bytes.fromhex(match.group(1)))
            elif len(entry) < MIN_KEY_LENGTH or any(c.isspace() for c in entry):
                raise ConfigError(
                    f"{where}: an API key must be at least {MIN_KEY_LENGTH} characters without spaces "
                    "(or sha256:<hex> of one)"
                )
            else:
                digests.append(hashlib.sha256(entry.encode("utf-8")).digest())
        return cls(tuple(digests))

    @classmethod
    def load(cls, key_file: Path | None = None, environ: MutableMapping[str, str] | None = None) -> ApiKeys:
        """Keys from ``key_file`` (one per line) and the ``BUSCAD_API_KEYS`` variable, together."""
        environ = os.environ if environ is None else environ
        keys = cls()
        if key_file is not None:
            try:
                text = Path(key_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{key_file}: cannot read the API key file ({exc})") from exc
            keys = cls.parse(text.splitlines(), str(key_file))
            if not keys:
                raise ConfigError(f"{key_file}: the API key file holds no key")
        from_env = cls.parse(re.split(r"[,\s]+", environ.get(ENV_KEYS, "")), ENV_KEYS)
        return cls(keys.digests + from_env.digests)

    def verify(self, presented: str) -> bool:
        """True when ``presented`` is one of the keys; compares with every digest in constant time."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = False
        for known in self.digests:
            found |= hmac.compare_digest(digest, known)
        return found


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def default_allowed_hosts(bind_host: str) -> tuple[str, ...]:
    """Host names a server bound to ``bind_host`` answers to by default.

    Loopback names always; the bind address itself when it is a specific one; any name (``*``) on a
    wildcard bind, where API keys are required (restrict further with ``--allowed-host``).
    """
    if is_wildcard(bind_host):
        return ("*",)
    hosts = list(LOOPBACK_HOSTS)
    if bind_host.lower() not in hosts:
        hosts.append(bind_host.strip("[]").lower())
    return tuple(hosts)


def host_name(host_header: str) -> str:
    """The name part of a Host header, lower case: ``[::1]:8000`` → ``::1``, ``a.b:80`` → ``a.b``."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True)
class Policy:
    """What :class:`Guard` enforces. ``allowed_hosts`` None or containing ``*`` means any Host."""

    api_keys: ApiKeys = field(default_factory=ApiKeys)
    allowed_hosts: tuple[str, ...] | None = None
    allowed_origins: tuple[str, ...] = ()

    def host_allowed(self, host_header: str | None) -> bool:
        if self.allowed_hosts is None or "*" in self.allowed_hosts:
            return True
        if not host_header:
            return False
        return host_name(host_header) in {h.strip("[]").lower() for h in self.allowed_hosts}

    def origin_allowed(self, origin: str | None, scheme: str, host_header: str | None,
                       fetch_site: str | None) -> bool:
        if origin is None:
            return fetch_site not in ("cross-site",)  # non-browser clients send neither
        origin = origin.strip().lower().rstrip("/")
        if host_header and origin == f"{scheme}://{host_header.strip().lower()}":
            return True
        return origin in {o.lower().rstrip("/") for o in self.allowed_origins}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, status: int, message: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    import json

    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: Host allow-list, Origin check, API keys on ``/v1/*``, and a query-free access log.

    Refusals happen from the headers alone, before the body is read.
    """

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 0}

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self._dispatch(scope, receive, logged_send)
        finally:
            # method, path and status only: no query string (it may carry names), no client address
            access_log.info('"%s %s" %d %.0f ms', scope.get("method", "?"), scope.get("path", "?"),
                            status["code"], (time.perf_counter() - start) * 1000)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.policy
        host = _header(scope, b"host")
        if not policy.host_allowed(host):
            await _refuse(send, 400, "unknown Host header: this server does not answer to that name")
            return
        origin = _header(scope, b"origin")
        if not policy.origin_allowed(origin, str(scope.get("scheme", "http")), host,
                                     _header(scope, b"sec-fetch-site")):
            await _refuse(send, 403, "cross-origin request refused (the Origin is not this server's)")
            return
        path = str(scope.get("path", ""))
        if policy.api_keys and path.startswith(PROTECTED_PREFIX) and scope.get("method") != "OPTIONS":
            authorization = _header(scope, b"authorization") or ""
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip() or not policy.api_keys.verify(token.strip()):
                message = "missing API key" if not authorization else "invalid API key"
                await _refuse(send, 401, f"{message}: send 'Authorization: Bearer <key>'",
                              [(b"www-authenticate", b'Bearer realm="buscad"')])
                return
        await self.app(scope, receive, send)
