"""`devstream mcp --http HOST:PORT`: the server over streamable HTTP.

A browser page can reach a server on loopback (DNS rebinding), so every request's `Host`
must name the address the server is bound to and an `Origin`, when sent, must be that
address too. Bound to anything but loopback the server is reachable from other machines,
so it also requires `Authorization: Bearer <DEVSTREAM_MCP_TOKEN>`.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings

from devstream.app import DevStream
from devstream.config import Settings
from devstream.errors import ConfigError
from devstream.mcp.server import build_server, embedding_pending
from devstream.mcp.tools import Spec

TOKEN_ENV = "DEVSTREAM_MCP_TOKEN"  # noqa: S105 - the variable's name, not a token
PATH = "/mcp"

Asgi = Callable[..., Any]


def address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) as a host and a port; port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65_535:
        raise ConfigError(f"--http takes HOST:PORT, e.g. 127.0.0.1:8765; got {text!r}")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ConfigError(
                f"--http needs an IP address or localhost, got {host!r}",
                hint="bind the address clients will name in their Host header",
            ) from exc
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


async def serve_http(
    settings: Settings,
    tools: Sequence[Spec],
    bind: str,
    *,
    token: str | None,
    announce: Callable[[str], None],
) -> None:
    """Serve the store at http://HOST:PORT/mcp until interrupted; `announce` gets the URL
    once the socket is bound."""
    host, port = address(bind)
    loopback = is_loopback(host)
    if not loopback and not token:
        raise ConfigError(
            f"serving on {host}, beyond this machine, needs a token",
            hint=f"set {TOKEN_ENV}; clients send it as 'Authorization: Bearer <token>'",
        )
    if host != "localhost" and ipaddress.ip_address(host).is_unspecified:
        raise ConfigError(f"--http needs the address clients will use, not {host}")
    import uvicorn  # noqa: PLC0415 - only HTTP serving needs it

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family)
    except OSError as exc:  # the port taken, or an address this machine does not have
        raise ConfigError(
            f"cannot serve on {bind}: {exc.strerror or exc}",
            hint="pick another port, or port 0 for a free one",
        ) from exc
    port = listener.getsockname()[1]
    names = _host_names(host, port, loopback=loopback)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=names,
        allowed_origins=[f"http://{name}" for name in names],
    )
    async with DevStream.open(settings) as ds, embedding_pending(ds):
        app = build_server(ds, tools).streamable_http_app(
            streamable_http_path=PATH, transport_security=security, host=host
        )
        served = app if token is None else bearer(app, token)
        config = uvicorn.Config(served, log_level="warning", lifespan="on")
        announce(f"http://{names[0]}{PATH}")
        await uvicorn.Server(config).serve(sockets=[listener])


def _host_names(host: str, port: int, *, loopback: bool) -> list[str]:
    """The Host header values the server answers: its address, and on loopback every
    loopback name."""
    named = f"[{host}]" if ":" in host else host
    hosts = [named, *(["127.0.0.1", "localhost", "[::1]"] if loopback else [])]
    return [f"{name}:{port}" for name in dict.fromkeys(hosts)]


def bearer(app: Asgi, token: str) -> Asgi:
    """`app` behind a check of `Authorization: Bearer <token>` on every HTTP request."""
    expected = token.encode()

    async def checked(scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        if scope["type"] == "http":
            sent = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, credentials = sent.strip().partition(b" ")
            # An authentication scheme's name is case-insensitive (RFC 9110, 11.1).
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                credentials.strip(), expected
            ):
                await _refuse(send)
                return
        await app(scope, receive, send)

    return checked


async def _refuse(send: Asgi) -> None:
    body = b"missing or wrong bearer token"
    headers = [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
