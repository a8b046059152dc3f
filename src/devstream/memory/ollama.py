"""An embedder for Ollama's `POST /api/embed`, with retries and a circuit breaker.

`OllamaEmbedder` retries transient failures with jittered exponential backoff and sits
behind a `CircuitBreaker`, so a server that is down costs one fast failure per call
instead of a full retry cycle each time. One call waits at most its deadline in all,
retries and backoff included.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Sequence

import httpx
import numpy as np
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from devstream.errors import (
    DimensionMismatch,
    EmbeddingError,
    EmbeddingRefused,
    EmbeddingServerFailing,
    EmbeddingUnavailable,
)
from devstream.memory.breaker import CircuitBreaker
from devstream.memory.embedders import check_texts
from devstream.memory.vectors import Vectors, as_float32, fault
from devstream.vocabulary import EMBED_DIMENSION, EMBED_MODEL

__all__ = ["OllamaEmbedder", "describe", "ollama_name"]


def ollama_name(model: str) -> str:
    """A model name as Ollama lists it: `name` means `name:latest`."""
    return model if ":" in model else f"{model}:latest"


# --- Ollama ------------------------------------------------------------------------------


class _RetryableStatus(Exception):
    """A 429 or 5xx answer: worth another attempt, maybe after the server's Retry-After."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}: {_error_text(response)}")
        self.status_code = response.status_code
        self.retry_after_s = _retry_after_s(response)


def _retry_after_s(response: httpx.Response) -> float | None:
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _error_text(response: httpx.Response, limit: int = 200) -> str:
    """The server's own explanation: Ollama's {"error": ...} or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text: str = body["error"]
    else:
        text = response.text.strip() or response.reason_phrase
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """A transport error as one line: its kind, and its message when it has one."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _exponential_jitter(initial_s: float, max_s: float) -> wait_exponential_jitter:
    # tenacity renamed `initial` to `multiplier` (and deprecated `initial`) after 9.0.
    if "multiplier" in inspect.signature(wait_exponential_jitter).parameters:
        return wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)
    return wait_exponential_jitter(initial=initial_s, max=max_s, jitter=initial_s)


class OllamaEmbedder:
    """Embeddings from an Ollama server's `POST /api/embed`, in batches, with retries.

    Per batch: the breaker is asked first; then the request is tried up to `attempts`
    times on timeouts, transport errors (refused connections), 429 and 5xx, waiting with
    jittered exponential backoff or, on 429/503, the server's `Retry-After` (capped at
    `backoff_max_s`). Exhausted retries raise `EmbeddingUnavailable` (after 429 or 5xx
    answers, `EmbeddingServerFailing`); a 4xx raises `EmbeddingRefused` at once, and an
    unusable body `EmbeddingError`; vectors of the wrong length raise `DimensionMismatch`.
    One `embed()` call, all its batches and retries included, takes at most `deadline_s`.
    `retries`, `retry_wait_s` and `rejected` are running totals for metrics.
    """

    costly = True  # a round trip to a model server

    def __init__(
        self,
        base_url: str,
        model: str = EMBED_MODEL,
        dimension: int = EMBED_DIMENSION,
        *,
        timeout_s: float = 30.0,
        deadline_s: float = 30.0,
        connect_timeout_s: float = 2.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 2.0,
        batch_size: int = 64,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if dimension < 1:
            raise ValueError(f"dimension must be positive, got {dimension}")
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive, got {deadline_s}")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/api/embed"
        self.model = model
        self.dimension = dimension
        self.attempts = attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        )
        self.retries = 0  # attempts repeated after a transient failure
        self.retry_wait_s = 0.0  # seconds spent waiting between attempts
        self.rejected = 0  # batches refused by the open circuit breaker, no request sent

    async def aclose(self) -> None:
        """Close the HTTP client if this embedder created it."""
        if self._owns_client:
            await self._client.aclose()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        batches = [
            await self._embed_batch(texts[start : start + self.batch_size], deadline)
            for start in range(0, len(texts), self.batch_size)
        ]
        return batches[0] if len(batches) == 1 else np.concatenate(batches)

    async def _embed_batch(self, batch: Sequence[str], deadline: float) -> Vectors:
        try:
            self.breaker.before_call()
        except EmbeddingUnavailable as exc:
            self.rejected += 1
            raise EmbeddingUnavailable(f"not calling {self.url}: {exc}") from exc
        # What the breaker counts: it measures whether the server answers usefully.
        # Unreachable or still failing after retries is a failure, and so is a 2xx body we
        # cannot use (bad JSON, NaN, wrong count): a server returning garbage is as broken as
        # one that is down. A 4xx or a DimensionMismatch is a coherent answer from a healthy
        # server to a request our configuration got wrong; waiting will not fix it, so it
        # counts as a success, and callers keep seeing the precise, actionable error instead
        # of "unavailable". Cancellation gives no verdict and only frees the probe slot.
        try:
            response = await self._post_within(batch, deadline)
        except EmbeddingUnavailable:
            self.breaker.record_failure()
            raise
        except EmbeddingError:
            self.breaker.record_success()
            raise
        except BaseException:
            self.breaker.abandon_call()
            raise
        try:
            vectors = self._parse(response, len(batch))
        except DimensionMismatch:
            self.breaker.record_success()
            raise
        except EmbeddingError:
            self.breaker.record_failure()
            raise
        except BaseException:
            self.breaker.abandon_call()
            raise
        self.breaker.record_success()
        return vectors

    async def _post(self, batch: Sequence[str]) -> httpx.Response:
        response = await self._client.post(
            self.url, json={"model": self.model, "input": list(batch)}
        )
        status = response.status_code
        if status == 429 or status >= 500:
            raise _RetryableStatus(response)
        if status >= 400:
            reason = _error_text(response)
            raise EmbeddingRefused(
                f"{self.url} refused the request with HTTP {status}: {reason}",
                hint=self._refusal_hint(status, reason),
            )
        return response

    def _refusal_hint(self, status: int, reason: str) -> str:
        if "context length" in reason or status == 413:
            return (
                f"the text is too long for model {self.model!r}: store shorter memories "
                "(lower max_memory_chars), or use a model with a longer context"
            )
        if status == 404 or "not found" in reason:
            return f"pull the model on the server: `ollama pull {self.model}`"
        return f"check that the URL is an Ollama server and model {self.model!r} is right"

    async def _post_within(self, batch: Sequence[str], deadline: float) -> httpx.Response:
        """The request with its retries, given up when the call's deadline passes."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(self._post_with_retries(batch), max(remaining, 0.0))
        except asyncio.TimeoutError as exc:
            raise EmbeddingUnavailable(
                f"embedding server {self.url} timed out: no answer within the "
                f"{self.deadline_s:g} s deadline for one call, retries included"
            ) from exc

    def _wait(self, backoff: wait_exponential_jitter) -> Callable[[RetryCallState], float]:
        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, _RetryableStatus) and exc.retry_after_s is not None:
                return min(exc.retry_after_s, self.backoff_max_s)
            return backoff(state)

        return wait

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        self.retry_wait_s += state.upcoming_sleep

    async def _post_with_retries(self, batch: Sequence[str]) -> httpx.Response:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait(_exponential_jitter(self.backoff_initial_s, self.backoff_max_s)),
            retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(self._post, batch)
        except _RetryableStatus as exc:
            raise EmbeddingServerFailing(
                f"embedding server {self.url} kept failing after {self.attempts} attempt(s): {exc}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise EmbeddingUnavailable(
                f"embedding server {self.url} timed out: no answer within {self.timeout_s:g} s, "
                f"{self.attempts} attempt(s)"
            ) from exc
        except httpx.TransportError as exc:
            raise EmbeddingUnavailable(
                f"cannot reach embedding server {self.url} after {self.attempts} "
                f"attempt(s): {describe(exc)}"
            ) from exc
        return response

    def _parse(self, response: httpx.Response, expected: int) -> Vectors:
        """Validated float32 rows: count, then dimension, then types and finiteness."""
        try:
            body = response.json()
        except ValueError as exc:
            raise EmbeddingError(f"{self.url} returned a body that is not JSON: {exc}") from exc
        rows = body.get("embeddings") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise EmbeddingError(f'{self.url} returned no "embeddings" list')
        if len(rows) != expected:
            raise EmbeddingError(f"{self.url} returned {len(rows)} vectors for {expected} texts")
        for row in rows:
            if not isinstance(row, list):
                raise EmbeddingError(f"{self.url} returned an embedding that is not a list")
            if len(row) != self.dimension:
                raise DimensionMismatch(model=self.model, expected=self.dimension, actual=len(row))
            if not all(type(value) in (float, int) for value in row):
                raise EmbeddingError(f"{self.url} returned an embedding with non-numeric values")
        try:
            vectors = as_float32(rows).reshape(expected, self.dimension)
        except (OverflowError, ValueError) as exc:
            raise EmbeddingError(f"{self.url} returned values that are not floats: {exc}") from exc
        if problem := fault(vectors):
            raise EmbeddingError(f"{self.url} returned {problem}")
        return vectors
