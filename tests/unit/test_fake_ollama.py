"""The fake Ollama of devstream.testing, over real sockets on 127.0.0.1."""

from __future__ import annotations

import importlib
import json
import math
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import ollama
import pytest

import devstream
from devstream.testing import FakeOllama, deterministic_embedding
from devstream.testing.__main__ import main
from devstream.testing.ollama import (
    CONTEXT_LENGTH_ERROR,
    GARBAGE_BODY,
    MAX_BODY_BYTES,
    MAX_STALL_S,
    loopback_host,
)
from tests.support import PROCESS_WAIT_S

DIMENSION = 16
TIMEOUT = httpx.Timeout(5.0)
# Bounds every wait on another thread.
DEADLINE_S = 10.0


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    with FakeOllama(dimension=DIMENSION) as fake:
        yield fake


@pytest.fixture
def client(server: FakeOllama) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        yield http


def embed(
    client: httpx.Client, inputs: str | list[str], model: str = "embeddinggemma"
) -> httpx.Response:
    return client.post("/api/embed", json={"model": model, "input": inputs})


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# deterministic_embedding


def test_embedding_is_a_stable_unit_float32_vector() -> None:
    vector = deterministic_embedding("hello")
    assert len(vector) == 768
    assert vector == deterministic_embedding("hello")
    assert math.fsum(v * v for v in vector) == pytest.approx(1.0, abs=1e-6)
    assert np.array(vector, dtype=np.float32).tolist() == vector
    assert json.loads(json.dumps(vector)) == vector


def test_different_texts_give_different_vectors() -> None:
    texts = ["", "a", "b", "hello", "hello ", "\ud800 lone surrogate", "ünïcödé"]
    vectors = [tuple(deterministic_embedding(text, 32)) for text in texts]
    assert len(set(vectors)) == len(texts)
    assert deterministic_embedding("x", 1) in ([1.0], [-1.0])


def test_embedding_dimension_must_be_positive() -> None:
    with pytest.raises(ValueError, match="dimension"):
        deterministic_embedding("x", 0)


# The healthy server


def test_embeds_a_string(server: FakeOllama, client: httpx.Client) -> None:
    response = embed(client, "hello", model="embeddinggemma")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "model": "embeddinggemma",
        "embeddings": [deterministic_embedding("hello", DIMENSION)],
        "total_duration": 1_000_000,
        "load_duration": 0,
        "prompt_eval_count": 1,
    }


def test_a_model_that_is_not_installed_is_refused_as_ollama_refuses_it(
    server: FakeOllama, client: httpx.Client
) -> None:
    refused = embed(client, "hello", model="nomic-embed-text")
    assert (refused.status_code, refused.json()) == (
        404,
        {"error": 'model "nomic-embed-text" not found, try pulling it first'},
    )
    assert embed(client, "hello", model="embeddinggemma:latest").status_code == 200
    server.installed = ["nomic-embed-text"]
    assert embed(client, "hello", model="nomic-embed-text").status_code == 200


def test_dimensions_cut_each_vector_and_keep_it_unit_length(client: httpx.Client) -> None:
    body = {"model": "embeddinggemma", "input": ["a", "b"], "dimensions": 3}
    vectors = client.post("/api/embed", json=body).json()["embeddings"]
    full = deterministic_embedding("a", DIMENSION)
    assert [len(vector) for vector in vectors] == [3, 3]
    assert math.isclose(math.hypot(*vectors[0]), 1.0, rel_tol=1e-6)
    assert np.allclose(vectors[0], np.array(full[:3]) / np.linalg.norm(full[:3]), rtol=1e-6)
    for dimensions in (0, True, "3", DIMENSION + 1):
        too_many = client.post("/api/embed", json={**body, "dimensions": dimensions})
        assert too_many.status_code == 400, dimensions


def test_the_official_ollama_client_speaks_to_it(server: FakeOllama) -> None:
    """The `ollama` package (the protocol's reference client) embeds, lists and shows."""
    with ollama.Client(host=server.url, timeout=TIMEOUT) as client:
        answer = client.embed(model="embeddinggemma", input=["hello", "world"])
        listed = client.list().models
        shown = client.show("embeddinggemma")
        with pytest.raises(ollama.ResponseError) as missing:
            client.embed(model="nomic-embed-text", input="hello")
    assert answer.embeddings == [deterministic_embedding(t, DIMENSION) for t in ("hello", "world")]
    assert answer.prompt_eval_count == 2
    assert [model.model for model in listed] == ["embeddinggemma:latest"]
    assert shown.details is not None
    assert missing.value.status_code == 404
    assert "try pulling it first" in missing.value.error


def test_embeds_a_list_in_order(client: httpx.Client) -> None:
    texts = ["one", "two", "three"]
    embeddings = embed(client, texts).json()["embeddings"]
    assert embeddings == [deterministic_embedding(text, DIMENSION) for text in texts]
    assert embed(client, []).json()["embeddings"] == []


def test_default_dimension_is_768() -> None:
    with FakeOllama() as fake, httpx.Client(base_url=fake.url, timeout=TIMEOUT) as http:
        [vector] = embed(http, "x").json()["embeddings"]
    assert len(vector) == 768
    assert vector == deterministic_embedding("x")


def test_version_tags_and_root(server: FakeOllama, client: httpx.Client) -> None:
    assert client.get("/api/version").json() == {"version": "0.0.0-fake"}
    models = client.get("/api/tags").json()["models"]
    assert [model["name"] for model in models] == ["embeddinggemma:latest"]
    assert client.get("/").text == "Ollama is running"


def test_show_knows_the_installed_models_by_ollamas_naming_rule(
    server: FakeOllama, client: httpx.Client
) -> None:
    for name in ("embeddinggemma", "embeddinggemma:latest"):
        shown = client.post("/api/show", json={"model": name})
        assert shown.status_code == 200, name
        assert shown.json()["details"]["embedding_length"] == server.dimension
    assert client.post("/api/show", json={"model": "embeddinggemma:2b"}).status_code == 404
    server.installed = []
    missing = client.post("/api/show", json={"model": "embeddinggemma"})
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "model 'embeddinggemma' not found"},
    )
    assert client.get("/api/tags").json()["models"] == []
    assert client.post("/api/show", json={}).status_code == 400


def test_a_poisoned_input_is_refused_and_the_rest_embedded(
    server: FakeOllama, client: httpx.Client
) -> None:
    server.poison("TOO LONG")
    refused = client.post(
        "/api/embed", json={"model": "embeddinggemma", "input": ["fine", "TOO LONG here"]}
    )
    assert (refused.status_code, refused.json()["error"]) == (400, CONTEXT_LENGTH_ERROR)
    assert embed(client, "fine").status_code == 200
    server.poison("bad", status=500, message="llama runner process has terminated")
    assert embed(client, "a bad one").json() == {"error": "llama runner process has terminated"}
    with pytest.raises(ValueError, match="must not be empty"):
        server.poison("")


def test_unknown_paths_are_404_and_wrong_methods_405(client: httpx.Client) -> None:
    assert client.get("/api/nothing").status_code == 404
    assert client.post("/api/generate", json={}).status_code == 404
    wrong_method = client.get("/api/embed")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert client.post("/api/version", json={}).status_code == 405


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"", "invalid JSON"),
        (b'["a"]', "JSON object"),
        (b'{"input": "a"}', "model is required"),
        (b'{"model": "embeddinggemma", "input": 3}', "input must be"),
        (b'{"model": "embeddinggemma", "input": ["a", 1]}', "input must be"),
    ],
)
def test_bad_requests_are_400(client: httpx.Client, body: bytes, message: str) -> None:
    response = client.post("/api/embed", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_bodies_need_a_sane_content_length(server: FakeOllama, client: httpx.Client) -> None:
    chunked = client.post(
        "/api/embed", content=iter([b'{"model": "embeddinggemma", "input": "x"}'])
    )
    assert chunked.status_code == 411
    for length, status in (("abc", 400), ("-1", 400), (str(MAX_BODY_BYTES + 1), 413)):
        with socket.create_connection((server.host, server.port), timeout=5) as raw:
            raw.sendall(
                f"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
            )
            status_line = raw.makefile("rb").readline()
        assert status_line.split()[1] == str(status).encode()
    assert server.embed_requests == 0


def test_many_requests_at_once(server: FakeOllama) -> None:
    texts = [f"text {i}" for i in range(16)]
    with (
        httpx.Client(base_url=server.url, timeout=TIMEOUT) as http,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        responses = list(pool.map(lambda text: embed(http, text), texts))
    assert [r.json()["embeddings"][0] for r in responses] == [
        deterministic_embedding(text, DIMENSION) for text in texts
    ]
    assert (server.embed_requests, server.embedded_inputs) == (16, 16)


# Switches


def test_refuse_then_recover_on_the_same_port(server: FakeOllama, client: httpx.Client) -> None:
    assert embed(client, "before").status_code == 200  # leaves a keep-alive connection
    port = server.port
    server.refuse()
    with pytest.raises(httpx.ConnectError):
        embed(client, "pooled connection")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/api/version", timeout=TIMEOUT)
    server.recover()
    assert server.listening
    assert server.port == port
    assert embed(client, "after").json()["embeddings"] == [
        deterministic_embedding("after", DIMENSION)
    ]


def test_a_refused_port_stays_taken_until_the_fake_stops() -> None:
    """While refusing, no other server can be given the port and answer in the fake's
    place (a fake that never had a connection: nothing lingers in TIME_WAIT there)."""
    fake = FakeOllama().start()
    try:
        fake.refuse()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind((fake.host, fake.port))
    finally:
        fake.stop()
    with socket.socket() as other:
        other.bind((fake.host, fake.port))  # released


def test_stall_outlasts_a_short_client_timeout(server: FakeOllama, client: httpx.Client) -> None:
    server.stall(0.3)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/embed", json={"model": "embeddinggemma", "input": "x"}, timeout=0.1)
    started = time.monotonic()
    response = embed(client, "y")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert client.get("/api/version").status_code == 200  # only embed requests stall


def test_recover_releases_a_stalled_request(server: FakeOllama, client: httpx.Client) -> None:
    server.stall(60)
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        pending = pool.submit(embed, client, "stalled")
        wait_until(lambda: server.embed_requests == 1)
        assert not pending.done()
        server.recover()
        response = pending.result(timeout=DEADLINE_S)
    assert time.monotonic() - started < 5
    assert response.json()["embeddings"] == [deterministic_embedding("stalled", DIMENSION)]


def test_stop_releases_a_stalled_request_promptly() -> None:
    fake = FakeOllama(dimension=DIMENSION).start()
    try:
        fake.stall(60)
        with (
            httpx.Client(base_url=fake.url, timeout=TIMEOUT) as http,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            pending = pool.submit(embed, http, "stalled")
            wait_until(lambda: fake.embed_requests == 1)
            started = time.monotonic()
            fake.stop()
            assert time.monotonic() - started < 2
            with pytest.raises(httpx.TransportError):
                pending.result(timeout=DEADLINE_S)
    finally:
        fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{fake.url}/api/version", timeout=TIMEOUT)


def test_fail_answers_the_status(server: FakeOllama, client: httpx.Client) -> None:
    server.fail(503)
    response = embed(client, "x")
    assert response.status_code == 503
    assert "error" in response.json()
    assert client.get("/api/version").status_code == 200
    server.recover()
    assert embed(client, "x").status_code == 200


def test_rate_limit_says_when_to_retry(server: FakeOllama, client: httpx.Client) -> None:
    server.rate_limit(retry_after=7)
    response = embed(client, "x")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert "error" in response.json()


def test_garbage_is_not_json(server: FakeOllama, client: httpx.Client) -> None:
    server.garbage()
    response = embed(client, "x")
    assert response.status_code == 200
    assert response.content == GARBAGE_BODY
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_wrong_dimension(server: FakeOllama, client: httpx.Client) -> None:
    server.wrong_dimension(5)
    [vector] = embed(client, "x").json()["embeddings"]
    assert vector == deterministic_embedding("x", 5)
    server.recover()
    [vector] = embed(client, "x").json()["embeddings"]
    assert len(vector) == DIMENSION


def test_fail_next_then_healthy(server: FakeOllama, client: httpx.Client) -> None:
    server.fail_next(2, status=502)
    before = server.mode
    statuses = [embed(client, "x").status_code for _ in range(4)]
    assert statuses == [502, 502, 200, 200]
    assert (before, server.mode) == ("fail_next", "healthy")


def test_each_switch_replaces_the_last(server: FakeOllama, client: httpx.Client) -> None:
    server.fail(500)
    server.rate_limit()
    assert embed(client, "x").status_code == 429
    server.fail_next(0)
    assert server.mode == "healthy"
    assert embed(client, "x").status_code == 200


def test_counts_requests_inputs_and_keeps_the_last_body(
    server: FakeOllama, client: httpx.Client
) -> None:
    assert (server.embed_requests, server.embedded_inputs, server.last_request) == (0, 0, None)
    embed(client, ["a", "b", "c"])
    server.fail_next(1)
    embed(client, ["d", "e"])
    client.get("/api/version")
    assert (server.embed_requests, server.embedded_inputs) == (2, 3)
    assert server.last_request == {"model": "embeddinggemma", "input": ["d", "e"]}
    assert json.loads(server.last_request_body or b"") == server.last_request
    client.post("/api/embed", content=b"{oops")
    assert server.last_request is None
    assert server.last_request_body == b"{oops"
    server.reset()
    assert (server.embed_requests, server.embedded_inputs, server.last_request) == (0, 0, None)


def test_switch_arguments_are_checked(server: FakeOllama) -> None:
    bad: list[Callable[[], None]] = [
        lambda: server.stall(-1),
        lambda: server.stall(MAX_STALL_S + 1),
        lambda: server.fail(200),
        lambda: server.fail_next(-1),
        lambda: server.fail_next(1, status=302),
        lambda: server.rate_limit(-1),
        lambda: server.wrong_dimension(DIMENSION),
        lambda: server.wrong_dimension(0),
    ]
    for call in bad:
        with pytest.raises(ValueError, match="must"):
            call()
    assert server.mode == "healthy"


# Lifecycle and addresses


def test_lifecycle_errors_and_idempotent_stop() -> None:
    fake = FakeOllama()
    with pytest.raises(RuntimeError, match="no port"):
        _ = fake.url
    with pytest.raises(RuntimeError, match="not running"):
        fake.refuse()
    with fake:
        with pytest.raises(RuntimeError, match="already running"):
            fake.start()
        url = fake.url
    fake.stop()
    assert not fake.listening
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/version", timeout=TIMEOUT)


def test_only_loopback_addresses() -> None:
    assert loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("127.0.0.2") == "127.0.0.2"
    assert loopback_host("[::1]") == "::1"
    for host in ("0.0.0.0", "192.168.1.1", "::", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            FakeOllama(host=host)
    with pytest.raises(ValueError, match="port"):
        FakeOllama(port=70000)
    with pytest.raises(ValueError, match="dimension"):
        FakeOllama(dimension=0)


# The pytest plugin and the package's imports


def test_fixtures_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plugin="""
        import httpx

        pytest_plugins = ["devstream.testing.fixtures"]
        seen = []

        def test_function_scoped(fake_ollama):
            fake_ollama.fail(503)
            response = httpx.post(
                fake_ollama.url + "/api/embed",
                json={"model": "embeddinggemma", "input": "x"},
                timeout=5,
            )
            assert response.status_code == 503
            seen.append(fake_ollama)

        def test_function_scoped_is_stopped_after():
            assert not seen[0].listening

        def test_session_scoped(fake_ollama_server):
            seen.append(fake_ollama_server)
            assert httpx.get(fake_ollama_server.url + "/api/version", timeout=5).is_success

        def test_session_scoped_is_shared(fake_ollama_server):
            assert fake_ollama_server is seen[1] and fake_ollama_server.listening
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:asyncio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_package_imports_no_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytest", None)  # importing it now fails
    monkeypatch.setattr(devstream, "testing", devstream.testing)  # restored after the re-import
    for name in [name for name in sys.modules if name.startswith("devstream.testing")]:
        monkeypatch.delitem(sys.modules, name)
    for module in ("devstream.testing", "devstream.testing.ollama", "devstream.testing.__main__"):
        assert importlib.import_module(module).__name__ == module
    with pytest.raises(ImportError):
        importlib.import_module("devstream.testing.fixtures")


# python -m devstream.testing


def _stop_signals() -> list[signal.Signals]:
    return [signal.SIGTERM] if sys.platform == "win32" else [signal.SIGTERM, signal.SIGINT]


# The server as a terminal starts it: Ctrl-C raises KeyboardInterrupt. A process started with
# SIGINT ignored (a background job of a non-interactive shell, such as `ci/test &` in a
# script) keeps ignoring it, as Python and Unix want, so the test does not depend on how the
# suite was started.
_IN_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['devstream.testing', *sys.argv[1:]]; "
    "runpy.run_module('devstream.testing', run_name='__main__', alter_sys=True)"
)


@pytest.mark.parametrize("stop_signal", _stop_signals(), ids=lambda s: s.name)
def test_command_line_server(stop_signal: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _IN_A_TERMINAL, "--port", "0", "--dimension", "8"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        stdout = process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            url = lines.get(timeout=PROCESS_WAIT_S).strip()
        except queue.Empty:
            pytest.fail(f"the server printed no URL within {PROCESS_WAIT_S:g} s")
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")
        with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
            assert http.get("/api/version").json() == {"version": "0.0.0-fake"}
            [vector] = embed(http, "cli").json()["embeddings"]
        assert vector == deterministic_embedding("cli", 8)
        process.send_signal(stop_signal)
        try:
            _, stderr = process.communicate(timeout=PROCESS_WAIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within {PROCESS_WAIT_S:g} s of {stop_signal.name}")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=PROCESS_WAIT_S)
    assert "Ctrl-C" in stderr
    if sys.platform != "win32":
        assert process.returncode == 0, stderr


def test_command_line_refuses_other_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--host", "0.0.0.0", "--port", "0"])
    assert exit_info.value.code == 2
    assert "not a loopback address" in capsys.readouterr().err


def test_command_line_checks_port_and_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--port", "70000"], ["--dimension", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "0..65535" in capsys.readouterr().err


def test_command_line_reports_a_busy_port(
    server: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--port", str(server.port)]) == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in capsys.readouterr().err
