"""Running the app under uvicorn with settings that slow or idle clients cannot exploit.

- Request headers must arrive within :data:`HEADER_TIMEOUT_S` of the connection opening (or of the
  previous response): a client that connects and says nothing, or sends half a request line, is
  disconnected (uvicorn itself has no such timeout). Bodies have their own read timeouts
  (:func:`buscad.service.uploads.read_limited`).
- Idle keep-alive connections close after :data:`KEEP_ALIVE_S`.
- At most ``max_connections`` connections; above that uvicorn answers 503.
- No ``server`` banner; proxy headers (``X-Forwarded-For``/``-Proto``) are trusted only from the
  addresses given by ``forwarded_allow_ips`` (none by default); uvicorn's access log is off: the app logs
  method, path and status without the query string (:class:`buscad.service.security.Guard`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
DEFAULT_MAX_CONNECTIONS = 256


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request's headers."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout = float(getattr(config, "buscad_header_timeout", HEADER_TIMEOUT_S))
        self.header_timer: asyncio.TimerHandle | None = None

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout_expired(self) -> None:
        self.header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        previous = self.cycle
        super().data_received(data)
        if self.cycle is not previous and not self.cycle.response_complete:
            self._disarm_header_timer()  # a complete request line and headers arrived
        elif self._waiting_for_headers():
            self._arm_header_timer()  # bytes of a request whose headers are not complete yet

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def log_config() -> dict[str, Any]:
    """uvicorn's logging set-up, plus the app's loggers (access lines and errors) on its console handler."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["buscad"] = {"handlers": ["default"], "level": "INFO", "propagate": True}  # root has no handler
    return config


def server_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    forwarded_allow_ips: str | None = None,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    log_level: str = "info",
    **kwargs: Any,
) -> uvicorn.Config:
    """The uvicorn configuration ``buscad serve`` uses (also used by the tests' live servers)."""
    kwargs.setdefault("log_config", log_config())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=workers,
        http=GuardedH11Protocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=max_connections,
        server_header=False,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips or "",
        access_log=False,
        log_level=log_level,
        **kwargs,
    )
    config.buscad_header_timeout = header_timeout_s  # type: ignore[attr-defined]
    return config
