"""The Ollama embedder: the circuit breaker, retries, validation of answers."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
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
from devstream.memory.embedders import Embedder
from devstream.memory.ollama import BreakerState, CircuitBreaker, OllamaEmbedder
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
    ],
    ids=["429-now", "503-capped"],
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
    embedder = make_embedder()
    with pytest.raises(DimensionMismatch) as caught:
        await embedder.embed(["note"])
    assert (caught.value.expected, caught.value.actual, caught.value.model) == (
        DIM,
        3,
        "embeddinggemma",
    )
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
        (b'{"embeddings": [[NaN, 0, 0, 1]]}', "NaN"),
        (b'{"embeddings": [[0, Infinity, 0, 1]]}', "NaN"),
        (b'{"embeddings": [[0, 1e39, 0, 1]]}', "out-of-range"),
        (b'{"embeddings": [[0, "1", 0, 1]]}', "non-numeric"),
        (b'{"embeddings": [[0, true, 0, 1]]}', "non-numeric"),
        (b'{"embeddings": ["0 0 0 1"]}', "not a list"),
    ],
    ids=["html", "missing", "count", "nan", "inf", "float32-overflow", "string", "bool", "row"],
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
