"""The Ollama embedder: the circuit breaker, retries, validation of answers."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest
from pytest_httpx import HTTPXMock

from devstream.errors import (
    DimensionMismatch,
    EmbeddingError,
    EmbeddingRefused,
    EmbeddingUnavailable,
)
from devstream.memory.breaker import BreakerState, CircuitBreaker
from devstream.memory.embedders import Embedder
from devstream.memory.ollama import OllamaEmbedder, describe, ollama_name
from tests.support import ManualClock

BASE_URL = "http://ollama.test:11434"
EMBED_URL = f"{BASE_URL}/api/embed"
DIM = 4
TINY_BACKOFF: dict[str, Any] = {"backoff_initial_s": 0.001, "backoff_max_s": 0.002}


def vector_for(text: str) -> list[float]:
    """A distinct, recognisable row per text, so tests can check order across batches."""
    return [float(len(text)), float(ord(text[0])), 0.5, -1.0]


def embeddings_body(texts: list[str]) -> dict[str, Any]:
    return {"model": "embeddinggemma", "embeddings": [vector_for(t) for t in texts]}


def echo(request: httpx.Request) -> httpx.Response:
    texts = json.loads(request.content)["input"]
    return httpx.Response(200, json=embeddings_body(texts))


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read afresh (mypy would otherwise keep an earlier narrowing)."""
    return breaker.state


MakeEmbedder = Callable[..., OllamaEmbedder]


@pytest.fixture
async def make_embedder() -> AsyncIterator[MakeEmbedder]:
    created: list[OllamaEmbedder] = []

    def make(**kwargs: Any) -> OllamaEmbedder:
        options: dict[str, Any] = {"dimension": DIM, **TINY_BACKOFF, **kwargs}
        embedder = OllamaEmbedder(BASE_URL, **options)
        created.append(embedder)
        return embedder

    yield make
    for embedder in created:
        await embedder.aclose()


# --- CircuitBreaker ----------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30.0, clock=ManualClock())
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    breaker.before_call()
    breaker.record_success()  # a success in between resets the count
    assert breaker.consecutive_failures == 0
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert state(breaker) == "closed"
    breaker.before_call()
    breaker.record_failure()
    assert state(breaker) == "open"
    with pytest.raises(EmbeddingUnavailable, match="3 consecutive failures"):
        breaker.before_call()


def test_breaker_half_open_lets_exactly_one_probe_through() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=30.0, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    assert state(breaker) == "open"
    clock.advance(29.9)
    with pytest.raises(EmbeddingUnavailable):
        breaker.before_call()

    clock.advance(0.1)
    assert state(breaker) == "half-open"
    breaker.before_call()  # the probe
    with pytest.raises(EmbeddingUnavailable, match="probe"):
        breaker.before_call()  # everyone else still fails fast
    breaker.record_failure()  # the probe failed: open again, fresh cool-down
    assert state(breaker) == "open"
    clock.advance(29.0)
    with pytest.raises(EmbeddingUnavailable):
        breaker.before_call()

    clock.advance(1.0)
    breaker.before_call()
    breaker.record_success()
    assert state(breaker) == "closed"
    breaker.before_call()
    breaker.before_call()


def test_breaker_abandoned_probe_frees_the_slot() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    breaker.before_call()
    breaker.abandon_call()  # e.g. the probe was cancelled
    breaker.before_call()  # the next caller may probe
    with pytest.raises(EmbeddingUnavailable):
        breaker.before_call()


def test_breaker_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown_s"):
        CircuitBreaker(cooldown_s=-1.0)
    # The bounds themselves are fine: no cool-down probes again at once.
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=0.0, clock=ManualClock())
    breaker.record_failure()
    assert state(breaker) == "half-open"


def test_breaker_defaults_and_the_wait_it_names() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(clock=clock)
    assert (breaker.failure_threshold, breaker.cooldown_s) == (3, 30.0)
    clock.advance(100.0)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(10.0)
    with pytest.raises(EmbeddingUnavailable, match=r"next probe in 20\.0s"):
        breaker.before_call()
    clock.advance(25.0)  # well past the cool-down, not only at its end
    breaker.before_call()
    assert state(breaker) == "half-open"


# --- OllamaEmbedder ----------------------------------------------------------------------


async def test_ollama_embeds_a_batch(httpx_mock: HTTPXMock, make_embedder: MakeEmbedder) -> None:
    texts = ["first note", "second"]
    httpx_mock.add_response(url=EMBED_URL, method="POST", json=embeddings_body(texts))
    embedder: Embedder = make_embedder()
    vectors = await embedder.embed(texts)

    request = httpx_mock.get_request()
    assert request is not None
    assert json.loads(request.content) == {"model": "embeddinggemma", "input": texts}
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, DIM)
    assert vectors.tolist() == [vector_for(t) for t in texts]


async def test_ollama_trailing_slash_and_empty_input(httpx_mock: HTTPXMock) -> None:
    embedder = OllamaEmbedder(BASE_URL + "/", dimension=DIM)
    try:
        empty = await embedder.embed([])
        assert empty.shape == (0, DIM)
        assert httpx_mock.get_requests() == []
        httpx_mock.add_response(url=EMBED_URL, json=embeddings_body(["x"]))
        assert (await embedder.embed(["x"])).shape == (1, DIM)
    finally:
        await embedder.aclose()


async def test_ollama_splits_into_batches_in_order(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    httpx_mock.add_callback(echo, url=EMBED_URL, is_reusable=True)
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    vectors = await make_embedder(batch_size=2).embed(texts)

    inputs = [json.loads(r.content)["input"] for r in httpx_mock.get_requests()]
    assert inputs == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    assert vectors.tolist() == [vector_for(t) for t in texts]


@pytest.mark.parametrize(
    ("count", "batch_size", "sizes"),
    [(65, None, [64, 1]), (300, 300, [300])],
    ids=["default-64", "one-batch-of-300"],
)
async def test_ollama_batch_sizes(
    httpx_mock: HTTPXMock,
    make_embedder: MakeEmbedder,
    count: int,
    batch_size: int | None,
    sizes: list[int],
) -> None:
    httpx_mock.add_callback(echo, url=EMBED_URL, is_reusable=True)
    options = {} if batch_size is None else {"batch_size": batch_size}
    texts = [f"text {n}" for n in range(count)]
    vectors = await make_embedder(**options).embed(texts)
    assert [len(json.loads(r.content)["input"]) for r in httpx_mock.get_requests()] == sizes
    assert vectors.tolist() == [vector_for(t) for t in texts]


async def test_ollama_retries_a_server_error_then_succeeds(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    httpx_mock.add_response(status_code=500, json={"error": "model is loading"})
    httpx_mock.add_response(json=embeddings_body(["note"]))
    embedder = make_embedder()
    vectors = await embedder.embed(["note"])
    assert vectors.tolist() == [vector_for("note")]
    assert embedder.retries == 1
    assert len(httpx_mock.get_requests()) == 2
    assert state(embedder.breaker) == "closed"


@pytest.mark.parametrize(
    ("response", "backoff", "expected_wait"),
    [
        # Retry-After: 0 beats a long backoff...
        (
            {"status_code": 429, "headers": {"Retry-After": "0"}},
            {"backoff_initial_s": 0.5, "backoff_max_s": 0.5},
            0.0,
        ),
        # ...and a long Retry-After is capped at backoff_max_s.
        (
            {"status_code": 503, "headers": {"Retry-After": "120"}},
            {"backoff_initial_s": 0.001, "backoff_max_s": 0.002},
            0.002,
        ),
        # A negative Retry-After means now.
        (
            {"status_code": 429, "headers": {"Retry-After": "-5"}},
            {"backoff_initial_s": 0.5, "backoff_max_s": 0.5},
            0.0,
        ),
    ],
    ids=["429-now", "503-capped", "429-negative"],
)
async def test_ollama_honours_retry_after(
    httpx_mock: HTTPXMock,
    make_embedder: MakeEmbedder,
    response: dict[str, Any],
    backoff: dict[str, float],
    expected_wait: float,
) -> None:
    httpx_mock.add_response(**response)
    httpx_mock.add_response(json=embeddings_body(["note"]))
    embedder = make_embedder(**backoff)
    assert (await embedder.embed(["note"])).shape == (1, DIM)
    assert embedder.retries == 1
    assert embedder.retry_wait_s == expected_wait


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        (503, "Wed, 21 Oct 2015 07:28:00 GMT"),
        (503, "inf"),
        (500, "0"),  # only 429 and 503 carry one that counts
    ],
    ids=["http-date", "infinite", "500"],
)
async def test_ollama_backs_off_on_its_own_without_a_usable_retry_after(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder, status: int, retry_after: str
) -> None:
    httpx_mock.add_response(status_code=status, headers={"Retry-After": retry_after})
    httpx_mock.add_response(json=embeddings_body(["note"]))
    embedder = make_embedder(backoff_initial_s=0.001, backoff_max_s=0.003)
    assert (await embedder.embed(["note"])).shape == (1, DIM)
    assert embedder.retries == 1
    assert 0.0 < embedder.retry_wait_s <= 0.003


async def test_ollama_gives_up_after_its_attempts(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    for _ in range(3):
        httpx_mock.add_response(status_code=502, json={"error": "bad gateway upstream"})
    embedder = make_embedder(attempts=3)
    with pytest.raises(EmbeddingUnavailable) as caught:
        await embedder.embed(["note"])
    message = str(caught.value)
    assert EMBED_URL in message
    assert "HTTP 502" in message
    assert "bad gateway upstream" in message
    assert "devstream memory backfill" in message
    assert caught.value.__cause__ is not None
    assert embedder.retries == 2
    assert 0.0 < embedder.retry_wait_s <= 0.004
    assert len(httpx_mock.get_requests()) == 3
    assert embedder.breaker.consecutive_failures == 1


@pytest.mark.parametrize(
    ("failure", "says"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot reach embedding server"),
        (httpx.ReadTimeout("timed out"), "timed out: no answer within 30 s, 2 attempt(s)"),
    ],
    ids=["refused", "timeout"],
)
async def test_ollama_transport_failures_become_unavailable(
    httpx_mock: HTTPXMock,
    make_embedder: MakeEmbedder,
    failure: httpx.TransportError,
    says: str,
) -> None:
    """A refused connection says it could not reach the server; a timeout says it timed out."""
    httpx_mock.add_exception(failure, is_reusable=True)
    embedder = make_embedder(attempts=2)
    with pytest.raises(EmbeddingUnavailable, match=re.escape(says)) as caught:
        await embedder.embed(["note"])
    assert EMBED_URL in str(caught.value)
    assert caught.value.__cause__ is failure
    assert embedder.retries == 1
    assert len(httpx_mock.get_requests()) == 2


async def test_ollama_wrong_dimension_raises_dimension_mismatch(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    httpx_mock.add_response(json={"embeddings": [[0.1, 0.2, 0.3]]})
    httpx_mock.add_response(json={"embeddings": [[0.1, 0.2, 0.3, 0.4, 0.5]]})
    embedder = make_embedder()
    with pytest.raises(DimensionMismatch) as caught:
        await embedder.embed(["note"])
    assert (caught.value.expected, caught.value.actual, caught.value.model) == (
        DIM,
        3,
        "embeddinggemma",
    )
    with pytest.raises(DimensionMismatch) as longer:
        await embedder.embed(["note"])
    assert longer.value.actual == 5
    message = str(caught.value)
    assert "'embeddinggemma'" in message
    assert "3-dimensional" in message
    assert f"configured dimension is {DIM}" in message
    assert "devstream memory reembed" in message
    assert embedder.retries == 0
    # A coherent answer from a reachable server: the breaker does not count it.
    assert embedder.breaker.consecutive_failures == 0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"<html>proxy error</html>", "not JSON"),
        (b'{"model": "embeddinggemma"}', 'no "embeddings" list'),
        (b'{"embeddings": [[0, 0, 0, 1], [0, 0, 1, 0]]}', "2 vectors for 1 texts"),
        (b'{"embeddings": []}', "0 vectors for 1 texts"),
        (b'{"embeddings": [[NaN, 0, 0, 1]]}', "NaN"),
        (b'{"embeddings": [[0, Infinity, 0, 1]]}', "NaN"),
        (b'{"embeddings": [[0, 1e39, 0, 1]]}', "out-of-range"),
        (b'{"embeddings": [[0, 1e30, 0, 1]]}', "length overflows"),
        (b'{"embeddings": [[0, "1", 0, 1]]}', "non-numeric"),
        (b'{"embeddings": [[0, true, 0, 1]]}', "non-numeric"),
        (b'{"embeddings": ["0 0 0 1"]}', "not a list"),
        (b'{"embeddings": [[0, 1' + b"0" * 400 + b", 0, 1]]}", "not floats"),
    ],
    ids=[
        "html",
        "missing",
        "count",
        "none",
        "nan",
        "inf",
        "float32-overflow",
        "length-overflow",
        "string",
        "bool",
        "row",
        "huge-integer",
    ],
)
async def test_ollama_unusable_bodies_raise_embedding_error(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder, content: bytes, match: str
) -> None:
    httpx_mock.add_response(content=content)
    embedder = make_embedder()
    with pytest.raises(EmbeddingError, match=match) as caught:
        await embedder.embed(["note"])
    assert type(caught.value) is EmbeddingError
    assert embedder.retries == 0
    assert len(httpx_mock.get_requests()) == 1
    # A server answering garbage is unhealthy: it counts against the breaker.
    assert embedder.breaker.consecutive_failures == 1


async def test_ollama_client_error_is_not_retried(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    httpx_mock.add_response(status_code=404, json={"error": 'model "nomic" not found'})
    embedder = make_embedder(model="nomic")
    with pytest.raises(EmbeddingRefused) as caught:
        await embedder.embed(["note"])
    assert type(caught.value) is EmbeddingRefused
    assert "HTTP 404" in str(caught.value)
    assert 'model "nomic" not found' in str(caught.value)
    assert caught.value.hint == "pull the model on the server: `ollama pull nomic`"
    assert embedder.retries == 0
    assert len(httpx_mock.get_requests()) == 1
    assert embedder.breaker.consecutive_failures == 0


async def test_ollama_bad_request_is_not_retried(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    error = {"error": "the input length exceeds the context length"}
    httpx_mock.add_response(status_code=400, json=error)
    embedder = make_embedder()
    with pytest.raises(EmbeddingRefused, match=r"HTTP 400: the input length exceeds") as caught:
        await embedder.embed(["note"])
    assert "too long for model 'embeddinggemma'" in caught.value.hint
    assert "pull" not in caught.value.hint
    assert embedder.retries == 0
    assert len(httpx_mock.get_requests()) == 1


@pytest.mark.parametrize(
    ("status", "reason", "hint"),
    [
        (413, "request entity too large", "the text is too long for model 'embeddinggemma'"),
        (404, "no such route", "pull the model on the server: `ollama pull embeddinggemma`"),
        (400, 'model "x" not found, try pulling it', "pull the model on the server"),
        (401, "unauthorized", "check that the URL is an Ollama server"),
        (405, "method not allowed", "check that the URL is an Ollama server"),
        (451, "unavailable for legal reasons", "check that the URL is an Ollama server"),
    ],
    ids=["413", "404", "not-found", "401", "405", "451"],
)
async def test_each_refusal_gets_the_hint_that_fits_it(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder, status: int, reason: str, hint: str
) -> None:
    httpx_mock.add_response(status_code=status, json={"error": reason})
    with pytest.raises(EmbeddingRefused) as caught:
        await make_embedder().embed(["note"])
    assert caught.value.hint.startswith(hint)
    assert str(caught.value).startswith(f"{EMBED_URL} refused the request with HTTP {status}: ")


@pytest.mark.parametrize(
    ("length", "shown"),
    [(10, "e" * 10), (200, "e" * 200), (201, "e" * 197 + "...")],
    ids=["short", "at-the-limit", "cut"],
)
async def test_the_servers_reason_is_quoted_up_to_200_characters(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder, length: int, shown: str
) -> None:
    httpx_mock.add_response(status_code=400, json={"error": "e" * length})
    with pytest.raises(EmbeddingRefused) as caught:
        await make_embedder().embed(["note"])
    assert str(caught.value).startswith(f"{EMBED_URL} refused the request with HTTP 400: {shown} (")


@pytest.mark.parametrize("deadline_s", [0.5, 2.0])
async def test_each_batch_gets_what_is_left_of_the_calls_deadline(
    httpx_mock: HTTPXMock,
    make_embedder: MakeEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    deadline_s: float,
) -> None:
    """The time each batch may take, read where it is handed to `wait_for` (which here
    waits as long as it takes): never more than the call's deadline, and shrinking."""
    budgets: list[float] = []

    async def no_wait_for(awaitable: Awaitable[Any], timeout: float) -> Any:
        budgets.append(timeout)
        return await awaitable

    httpx_mock.add_callback(echo, is_reusable=True)
    monkeypatch.setattr(asyncio, "wait_for", no_wait_for)
    await make_embedder(batch_size=1, deadline_s=deadline_s).embed(["a", "b"])
    assert len(budgets) == 2
    assert 0.0 <= budgets[1] <= budgets[0] <= deadline_s


async def test_one_call_gives_up_at_its_deadline_retries_included(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    never = asyncio.Event()

    async def stall(request: httpx.Request) -> httpx.Response:
        await never.wait()
        return echo(request)

    httpx_mock.add_callback(stall, is_optional=True)
    embedder = make_embedder(deadline_s=0.05, timeout_s=30.0)
    # The guard only bounds a broken deadline; the deadline ends the call long before.
    with pytest.raises(EmbeddingUnavailable, match=r"within the 0\.05 s deadline"):
        await asyncio.wait_for(embedder.embed(["note"]), timeout=10.0)
    assert state(embedder.breaker) == "closed"
    assert embedder.breaker.consecutive_failures == 1


async def test_breaker_fails_fast_then_probes_and_closes(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10.0, clock=clock)
    embedder = make_embedder(attempts=1, breaker=breaker)
    httpx_mock.add_exception(httpx.ConnectError("Connection refused"), is_reusable=True)
    for _ in range(2):
        with pytest.raises(EmbeddingUnavailable, match="cannot reach"):
            await embedder.embed(["note"])
    assert state(breaker) == "open"

    with pytest.raises(EmbeddingUnavailable, match="circuit breaker is open") as caught:
        await embedder.embed(["note"])
    assert EMBED_URL in str(caught.value)
    assert embedder.rejected == 1
    assert len(httpx_mock.get_requests()) == 2  # no request while open

    # Cool-down over: one probe goes out, a concurrent call fails fast, success closes.
    clock.advance(10.0)
    httpx_mock.reset()
    started, release = asyncio.Event(), asyncio.Event()

    async def gated_echo(request: httpx.Request) -> httpx.Response:
        started.set()
        await release.wait()
        return echo(request)

    httpx_mock.add_callback(gated_echo, url=EMBED_URL)
    probe = asyncio.create_task(embedder.embed(["probe"]))
    await started.wait()
    assert state(breaker) == "half-open"
    with pytest.raises(EmbeddingUnavailable, match="probe call is running"):
        await embedder.embed(["other"])
    assert embedder.rejected == 2
    release.set()
    assert (await probe).tolist() == [vector_for("probe")]
    assert state(breaker) == "closed"

    httpx_mock.add_callback(echo, url=EMBED_URL)
    assert (await embedder.embed(["after"])).tolist() == [vector_for("after")]
    assert len(httpx_mock.get_requests()) == 2


async def test_failed_probe_reopens_the_breaker(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10.0, clock=clock)
    embedder = make_embedder(attempts=1, breaker=breaker)
    httpx_mock.add_response(status_code=503)
    httpx_mock.add_response(status_code=503)
    with pytest.raises(EmbeddingUnavailable, match="HTTP 503"):
        await embedder.embed(["note"])
    clock.advance(10.0)
    with pytest.raises(EmbeddingUnavailable, match="HTTP 503"):
        await embedder.embed(["probe"])
    assert state(breaker) == "open"
    with pytest.raises(EmbeddingUnavailable, match="circuit breaker is open"):
        await embedder.embed(["again"])
    assert len(httpx_mock.get_requests()) == 2


async def test_cancelled_probe_does_not_wedge_the_breaker(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10.0, clock=clock)
    breaker.record_failure()
    clock.advance(10.0)
    embedder = make_embedder(attempts=1, breaker=breaker)
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(60)
        return httpx.Response(200, json=embeddings_body(["never"]))

    httpx_mock.add_callback(hang)
    probe = asyncio.create_task(embedder.embed(["probe"]))
    await started.wait()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert state(breaker) == "half-open"
    httpx_mock.add_response(json=embeddings_body(["next"]))
    assert (await embedder.embed(["next"])).shape == (1, DIM)
    assert state(breaker) == "closed"


async def test_a_probe_whose_answer_breaks_unexpectedly_frees_the_slot(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither a verdict nor a wedge: the next caller may probe."""
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10.0, clock=clock)
    breaker.record_failure()
    clock.advance(10.0)
    embedder = make_embedder(breaker=breaker)
    httpx_mock.add_callback(echo, is_reusable=True)

    def broken(response: httpx.Response, expected: int) -> None:
        raise RuntimeError("a bug while reading the answer")

    with monkeypatch.context() as patched:
        patched.setattr(embedder, "_parse", broken)
        with pytest.raises(RuntimeError):
            await embedder.embed(["probe"])
    assert (state(breaker), breaker.consecutive_failures) == ("half-open", 1)
    assert (await embedder.embed(["next"])).shape == (1, DIM)
    assert state(breaker) == "closed"


async def test_aclose_closes_only_an_owned_client() -> None:
    owned = OllamaEmbedder(BASE_URL, dimension=DIM)
    await owned.aclose()
    assert owned._client.is_closed

    async with httpx.AsyncClient() as client:
        borrowed = OllamaEmbedder(BASE_URL, dimension=DIM, client=client)
        await borrowed.aclose()
        assert not client.is_closed


def test_ollama_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        OllamaEmbedder(BASE_URL, batch_size=0)
    with pytest.raises(ValueError, match="attempts"):
        OllamaEmbedder(BASE_URL, attempts=0)
    with pytest.raises(ValueError, match="dimension"):
        OllamaEmbedder(BASE_URL, dimension=0)
    for deadline in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="deadline_s"):
            OllamaEmbedder(BASE_URL, deadline_s=deadline)


async def test_ollama_allows_the_least_of_each_setting() -> None:
    embedder = OllamaEmbedder(BASE_URL, dimension=1, attempts=1, batch_size=1, deadline_s=1e-9)
    await embedder.aclose()
    assert (embedder.dimension, embedder.attempts, embedder.batch_size) == (1, 1, 1)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(400, text="  bad input\n"), "bad input"),
        (httpx.Response(400), "Bad Request"),
    ],
    ids=["text", "empty"],
)
async def test_the_servers_reason_is_its_text_or_else_the_status_phrase(
    httpx_mock: HTTPXMock, make_embedder: MakeEmbedder, response: httpx.Response, reason: str
) -> None:
    httpx_mock.add_response(status_code=response.status_code, content=response.content)
    with pytest.raises(EmbeddingRefused) as caught:
        await make_embedder().embed(["note"])
    assert str(caught.value).startswith(
        f"{EMBED_URL} refused the request with HTTP 400: {reason} ("
    )


def test_a_transport_error_is_described_by_its_kind_and_message() -> None:
    assert (
        describe(httpx.ConnectError("[Errno 111] refused")) == "ConnectError: [Errno 111] refused"
    )
    assert describe(httpx.ReadTimeout("")) == "ReadTimeout"


def test_ollama_names_mean_latest_unless_tagged() -> None:
    assert ollama_name("embeddinggemma") == "embeddinggemma:latest"
    assert ollama_name("nomic-embed-text:v1.5") == "nomic-embed-text:v1.5"


async def test_ollama_takes_vectors_of_the_default_dimension(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=EMBED_URL, json={"embeddings": [[0.5] * 768]})
    embedder = OllamaEmbedder(BASE_URL)
    try:
        assert (await embedder.embed(["note"])).shape == (1, 768)
    finally:
        await embedder.aclose()


async def test_ollama_defaults_are_the_documented_settings() -> None:
    embedder = OllamaEmbedder(BASE_URL)
    try:
        assert (embedder.model, embedder.dimension) == ("embeddinggemma", 768)
        assert (embedder.timeout_s, embedder.deadline_s, embedder.attempts) == (30.0, 30.0, 3)
        assert (embedder.backoff_initial_s, embedder.backoff_max_s) == (0.2, 2.0)
        assert embedder.batch_size == 64
        assert embedder._client.timeout == httpx.Timeout(30.0, connect=2.0)
    finally:
        await embedder.aclose()
