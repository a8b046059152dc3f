"""A fake Ollama: the embed API over real HTTP on loopback, with failures switched on demand.

    with FakeOllama(dimension=384) as server:
        settings = Settings(ollama_url=server.url, embed_dimension=384)
        server.fail_next(2)          # the next two embed requests answer 500
        server.stall(5.0)            # embed requests hang for 5 s (recover() lets them go)
        server.refuse()              # the port stops listening: connections are refused
        server.poison("marker")      # a request with an input holding "marker" answers 400
        server.recover()             # healthy again, on the same port
        server.installed = []        # no model pulled: /api/tags and /api/show say so

Each switch replaces the previous one. The switches affect `POST /api/embed` only, except
`refuse()`, which takes the whole server off the network. The server speaks HTTP/1.1 with
keep-alive, like Ollama; `refuse()` and `stop()` also cut the connections that are open.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import selectors
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np

from devstream.memory.ollama import ollama_name
from devstream.testing.vectors import deterministic_embedding
from devstream.vocabulary import EMBED_DIMENSION, EMBED_MODEL

FAKE_VERSION = "0.0.0-fake"
# Upper bound of stall(): a forgotten stall must not hold a test run for long.
MAX_STALL_S = 300.0
MAX_BODY_BYTES = 64 * 1024 * 1024
# What garbage() answers: a response cut off mid-way, sent as JSON.
GARBAGE_BODY = b'{"model": "garbage", "embeddings": [[0.0625, -0.125, '
# How long stop() and refuse() wait for request handlers to finish once their sockets are cut.
_JOIN_TIMEOUT_S = 5.0
# What an embed answer reports as its total duration, in nanoseconds.
_FAKE_DURATION_NS = 1_000_000
# Idle keep-alive connections are closed after this long.
_IDLE_TIMEOUT_S = 60.0

Mode = Literal[
    "healthy", "stall", "fail", "rate_limit", "garbage", "wrong_dimension", "fail_next", "poison"
]
# What Ollama 0.12 answers for an input longer than the model's context.
CONTEXT_LENGTH_ERROR = "the input length exceeds the context length"

_Self = TypeVar("_Self", bound="FakeOllama")


def loopback_host(host: str) -> str:
    """The address literal to bind for `host`, which must be a loopback address or localhost."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"{host!r} is not a loopback address: the fake Ollama listens only on "
            "127.0.0.0/8, ::1 or localhost"
        )
    return str(address)


@dataclass(frozen=True)
class _Behaviour:
    mode: Mode = "healthy"
    status: int = HTTPStatus.INTERNAL_SERVER_ERROR
    seconds: float = 0.0
    retry_after: int = 1
    dimension: int = 0
    marker: str = ""  # poison: inputs holding it are refused
    message: str = ""
    # Set to let stalled requests go; each stall() gets its own, so a later stall starts afresh.
    release: threading.Event = field(default_factory=threading.Event)


_HEALTHY = _Behaviour()


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json_reply(status: int, payload: object, *headers: tuple[str, str]) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), headers=headers)


def _error_reply(status: int, message: str, *headers: tuple[str, str]) -> _Reply:
    return _json_reply(status, {"error": message}, *headers)


@dataclass(frozen=True)
class _EmbedRequest:
    model: str
    inputs: list[str]
    dimensions: int | None  # truncate each vector to this many values, as Ollama does


def _embed_request(request: Any) -> _EmbedRequest | str:
    """An embed request's model, inputs and dimensions, or what is wrong with it."""
    if not isinstance(request, dict):
        return "request body must be a JSON object"
    model = request.get("model")
    if not isinstance(model, str) or not model:
        return "model is required"
    inputs = request.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
        return "input must be a string or a list of strings"
    dimensions = request.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        return "dimensions must be a positive integer"
    return _EmbedRequest(model, inputs, dimensions)


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that knows its open connections, so it can cut them."""

    block_on_close = False  # handlers are tracked here and joined with a deadline

    def __init__(self, address: tuple[str, int], fake: FakeOllama) -> None:
        self.address_family = _family(address[0])
        self.fake = fake
        self._tracking = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._served = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self._wake_reader.close()
            self._wake_writer.close()
            raise

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up in DNS for server_name; nothing here uses it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def serve(self) -> None:
        """Accept connections until stop_serving(): serve_forever, without its polling delay."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self.socket and not self._stopping.is_set():
                            self._accept()
        finally:
            self._served.set()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return  # the client gave up already
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def stop_serving(self, timeout: float) -> None:
        """Stop accepting: wake serve() and wait for it to return."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")
        self._served.wait(timeout)

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        handler = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="FakeOllama request",
            daemon=True,
        )
        with self._tracking:
            self._connections.add(request)
            self._handlers.add(handler)
        handler.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._tracking:
                self._handlers.discard(threading.current_thread())

    def close_request(self, request: Any) -> None:
        # Under the lock, so cut_connections() never shuts down a socket closed meanwhile.
        with self._tracking:
            self._connections.discard(request)
            super().close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up, or a connection cut by refuse() or stop(), is no error.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        """Shut down every open connection: blocked reads end, later writes fail."""
        with self._tracking:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._tracking:
            handlers = [
                h for h in self._handlers if h.is_alive() and h is not threading.current_thread()
            ]
        for handler in handlers:
            handler.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOllama"
    timeout = _IDLE_TIMEOUT_S
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test run's output is no place for an access log."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        fake = self.server.fake
        if path == "/api/version":
            self._reply(_json_reply(HTTPStatus.OK, {"version": FAKE_VERSION}))
        elif path == "/api/tags":
            self._reply(_json_reply(HTTPStatus.OK, fake._tags()))
        elif path == "/":
            self._reply(_Reply(HTTPStatus.OK, b"Ollama is running", "text/plain; charset=utf-8"))
        elif path == "/api/embed":
            self._reply(_method_not_allowed("POST"))
        else:
            self._reply(_error_reply(HTTPStatus.NOT_FOUND, f"{path} not found"))

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        if path == "/api/embed":
            self._reply(self.server.fake._answer_embed(body))
        elif path == "/api/show":
            self._reply(self.server.fake._answer_show(body))
        elif path in ("/", "/api/version", "/api/tags"):
            self._reply(_method_not_allowed("GET"))
        else:
            self._reply(_error_reply(HTTPStatus.NOT_FOUND, f"{path} not found"))

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._reply(_error_reply(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length"))
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > 0 else HTTPStatus.BAD_REQUEST
            self._reply(_error_reply(status, f"bad Content-Length: {length}"))
            return None
        return self.rfile.read(length)

    def _reply(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)


def _method_not_allowed(allowed: str) -> _Reply:
    return _error_reply(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", ("Allow", allowed))


class FakeOllama:
    """An Ollama embed server on loopback, for tests: real sockets, switchable failures.

    `POST /api/embed` answers `{"model": ..., "embeddings": [...]}` with one
    `deterministic_embedding(text, dimension)` per input (cut to `dimensions` when the request
    asks, and renormalised), with Ollama's `total_duration`, `load_duration` and
    `prompt_eval_count`; a model not in `installed` gets Ollama's 404. `GET /api/version`,
    `GET /api/tags` and `POST /api/show` answer as Ollama does. Port 0 picks a free port; once
    chosen, the port stays the server's for its lifetime, across refuse() and recover().

    The switches and counters are thread-safe and meant to be used from the test's thread while
    requests are in flight.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = EMBED_MODEL,
        dimension: int = EMBED_DIMENSION,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {port}")
        if dimension < 1:
            raise ValueError(f"dimension must be at least 1, not {dimension}")
        self.host = loopback_host(host)
        self.model = model
        self.dimension = dimension
        self.installed = [model]  # the models pulled, as `ollama pull` names them
        self._port = port
        self._state = threading.Lock()  # behaviour and counters; held only briefly
        self._lifecycle = threading.Lock()  # start, stop, refuse and recover, one at a time
        self._behaviour = _HEALTHY
        self._fail_remaining = 0
        self._embed_requests = 0
        self._embedded_inputs = 0
        self._last_request_body: bytes | None = None
        self._last_request: Any = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # While refusing: the port, bound but not listening (see `refuse`).
        self._held: socket.socket | None = None
        self._running = False

    # Lifecycle

    def start(self: _Self) -> _Self:
        """Listen and serve in a daemon thread. Returns the server, so `FakeOllama().start()`."""
        with self._lifecycle:
            if self._running:
                raise RuntimeError("the fake Ollama is already running")
            self._listen()
            self._running = True
        return self

    def stop(self) -> None:
        """Close the port, cut connections, end stalls and go back to healthy. Idempotent."""
        with self._lifecycle:
            self._running = False
            self._close()
            self._release_port()
            self._switch(_HEALTHY)

    def __enter__(self: _Self) -> _Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the fake Ollama has no port until it is started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321`, for `Settings(ollama_url=...)`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    # Switches

    def refuse(self) -> None:
        """Close the listening socket and cut open connections: connecting is refused.

        The port stays bound (not listening), so connecting to it is refused and no other
        server on the machine can be given it meanwhile: a client of this fake never reaches
        another program's server by its URL.
        """
        with self._lifecycle:
            if not self._running:
                raise RuntimeError("the fake Ollama is not running")
            self._close()
            held = socket.socket(_family(self.host), socket.SOCK_STREAM)
            # As the server's own socket does: its closed connections may linger in TIME_WAIT.
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind((self.host, self._port))
            self._held = held

    def recover(self) -> None:
        """Back to healthy: stalled requests go on at once; a refused port listens again."""
        with self._lifecycle:
            self._switch(_HEALTHY)
            if self._running and self._server is None:
                self._listen()

    def reset(self) -> None:
        """recover(), and forget the requests counted so far."""
        self.recover()
        with self._state:
            self._embed_requests = 0
            self._embedded_inputs = 0
            self._last_request_body = None
            self._last_request = None

    def stall(self, seconds: float) -> None:
        """Embed requests wait `seconds` (at most MAX_STALL_S) before they are answered."""
        if not 0 <= seconds <= MAX_STALL_S:
            raise ValueError(f"stall seconds must be in 0..{MAX_STALL_S}, not {seconds}")
        self._switch(_Behaviour("stall", seconds=seconds))

    def fail(self, status: int = HTTPStatus.INTERNAL_SERVER_ERROR) -> None:
        """Embed requests answer `status` with an Ollama-style `{"error": ...}` body."""
        self._switch(_Behaviour("fail", status=_error_status(status)))

    def fail_next(self, n: int, status: int = HTTPStatus.INTERNAL_SERVER_ERROR) -> None:
        """The next `n` embed requests fail with `status`; after them the server is healthy."""
        if n < 0:
            raise ValueError(f"n must not be negative, not {n}")
        behaviour = _Behaviour("fail_next", status=_error_status(status)) if n else _HEALTHY
        self._switch(behaviour, fail_remaining=n)

    def rate_limit(self, retry_after: int = 1) -> None:
        """Embed requests answer 429 Too Many Requests with `Retry-After: <retry_after>`."""
        if retry_after < 0:
            raise ValueError(f"retry_after must not be negative, not {retry_after}")
        self._switch(_Behaviour("rate_limit", retry_after=retry_after))

    def poison(
        self,
        marker: str,
        status: int = HTTPStatus.BAD_REQUEST,
        message: str = CONTEXT_LENGTH_ERROR,
    ) -> None:
        """Embed requests with an input that holds `marker` answer `status` with `message`,
        as Ollama refuses one input it cannot embed; the others are answered as usual."""
        if not marker:
            raise ValueError("the poison marker must not be empty")
        self._switch(
            _Behaviour("poison", status=_error_status(status), marker=marker, message=message)
        )

    def garbage(self) -> None:
        """Embed requests answer 200 with a body that is not JSON (GARBAGE_BODY)."""
        self._switch(_Behaviour("garbage"))

    def wrong_dimension(self, dimension: int) -> None:
        """Embed requests answer vectors of `dimension` values instead of the configured count."""
        if dimension < 1 or dimension == self.dimension:
            raise ValueError(
                f"wrong dimension must be at least 1 and differ from {self.dimension}, "
                f"not {dimension}"
            )
        self._switch(_Behaviour("wrong_dimension", dimension=dimension))

    # Observations

    @property
    def mode(self) -> Mode:
        with self._state:
            return self._behaviour.mode

    @property
    def embed_requests(self) -> int:
        """Embed requests received, whatever they were answered."""
        with self._state:
            return self._embed_requests

    @property
    def embedded_inputs(self) -> int:
        """Inputs embedded in successful answers."""
        with self._state:
            return self._embedded_inputs

    @property
    def last_request_body(self) -> bytes | None:
        """Raw body of the last embed request."""
        with self._state:
            return self._last_request_body

    @property
    def last_request(self) -> Any:
        """The last embed request's body as parsed JSON; None if it was not JSON."""
        with self._state:
            return self._last_request

    # Internals

    def _tags(self) -> dict[str, Any]:
        """What `GET /api/tags` answers: the installed models, each with its tag."""
        return {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": "1970-01-01T00:00:00Z",
                    "size": 0,
                    "digest": "0" * 64,
                    "details": {"format": "gguf", "family": "fake"},
                }
                for name in map(ollama_name, self.installed)
            ]
        }

    def _answer_show(self, body: bytes) -> _Reply:
        """`POST /api/show`: the model's details, or 404 when it is not installed."""
        try:
            request = json.loads(body)
        except ValueError as exc:
            return _error_reply(HTTPStatus.BAD_REQUEST, f"invalid JSON: {exc}")
        name = request.get("model") if isinstance(request, dict) else None
        if not isinstance(name, str) or not name:
            return _error_reply(HTTPStatus.BAD_REQUEST, "model is required")
        if ollama_name(name) not in map(ollama_name, self.installed):
            return _error_reply(HTTPStatus.NOT_FOUND, f"model '{name}' not found")
        details = {"format": "gguf", "family": "fake", "embedding_length": self.dimension}
        return _json_reply(HTTPStatus.OK, {"details": details, "model_info": {}})

    def _answer_embed(self, body: bytes) -> _Reply:
        """The reply to an embed request with `body`, as the current switches make it."""
        request: Any = None
        problem: str | None = None
        try:
            request = json.loads(body)
        except ValueError as exc:
            problem = f"invalid JSON: {exc}"
        with self._state:
            self._embed_requests += 1
            self._last_request_body = body
            self._last_request = request
            behaviour = self._behaviour
            if behaviour.mode == "fail_next":
                self._fail_remaining -= 1
                if self._fail_remaining <= 0:
                    self._behaviour = _HEALTHY
        if behaviour.mode == "stall":
            behaviour.release.wait(behaviour.seconds)
        elif behaviour.mode in ("fail", "fail_next"):
            return _error_reply(behaviour.status, f"fake failure: HTTP {behaviour.status}")
        elif behaviour.mode == "rate_limit":
            return _error_reply(
                HTTPStatus.TOO_MANY_REQUESTS,
                "too many requests",
                ("Retry-After", str(behaviour.retry_after)),
            )
        elif behaviour.mode == "garbage":
            return _Reply(HTTPStatus.OK, GARBAGE_BODY)
        parsed = _embed_request(request) if problem is None else problem
        if isinstance(parsed, str):
            return _error_reply(HTTPStatus.BAD_REQUEST, parsed)
        return self._embeddings(parsed, behaviour)

    def _embeddings(self, parsed: _EmbedRequest, behaviour: _Behaviour) -> _Reply:
        """The answer to a well-formed embed request."""
        if ollama_name(parsed.model) not in map(ollama_name, self.installed):
            message = f'model "{parsed.model}" not found, try pulling it first'
            return _error_reply(HTTPStatus.NOT_FOUND, message)
        inputs = parsed.inputs
        if behaviour.mode == "poison" and any(behaviour.marker in text for text in inputs):
            return _error_reply(behaviour.status, behaviour.message)
        dimension = behaviour.dimension if behaviour.mode == "wrong_dimension" else self.dimension
        if parsed.dimensions is not None and parsed.dimensions > dimension:
            return _error_reply(HTTPStatus.BAD_REQUEST, f"dimensions must be at most {dimension}")
        embeddings = [
            _cut(deterministic_embedding(text, dimension), parsed.dimensions) for text in inputs
        ]
        with self._state:
            self._embedded_inputs += len(inputs)
        return _json_reply(
            HTTPStatus.OK,
            {
                "model": parsed.model,
                "embeddings": embeddings,
                "total_duration": _FAKE_DURATION_NS,
                "load_duration": 0,
                "prompt_eval_count": sum(len(text.split()) for text in inputs),
            },
        )

    def _switch(self, behaviour: _Behaviour, fail_remaining: int = 0) -> None:
        with self._state:
            self._behaviour.release.set()
            self._behaviour = behaviour
            self._fail_remaining = fail_remaining

    def _release_stalled(self) -> None:
        with self._state:
            self._behaviour.release.set()

    def _listen(self) -> None:
        self._release_port()
        server = _Server((self.host, self._port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve,
            name=f"FakeOllama {self.url}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _release_port(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def _close(self) -> None:
        """Close the port and cut connections, then let stalled requests go: they find no client."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.stop_serving(_JOIN_TIMEOUT_S)
        server.server_close()
        server.cut_connections()
        self._release_stalled()
        thread.join(_JOIN_TIMEOUT_S)
        server.join_handlers(_JOIN_TIMEOUT_S)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def _cut(vector: list[float], dimensions: int | None) -> list[float]:
    """The first `dimensions` values at unit length again, as Ollama truncates."""
    if dimensions is None or dimensions == len(vector):
        return vector
    head = np.asarray(vector[:dimensions], dtype=np.float64)
    norm = float(np.linalg.norm(head))
    scaled = head / norm if norm > 0 else head
    return [float(np.float32(value)) for value in scaled]


def _error_status(status: int) -> int:
    if not 400 <= status <= 599:
        raise ValueError(f"an error status must be in 400..599, not {status}")
    return int(status)
