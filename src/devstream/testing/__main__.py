"""`python -m devstream.testing`: a fake Ollama in the foreground until Ctrl-C.

The URL goes to standard output on a line of its own (the actual port when --port is 0), so a
script can read it; the rest goes to standard error.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from devstream.testing.ollama import FakeOllama, loopback_host
from devstream.vocabulary import EMBED_DIMENSION, EMBED_MODEL


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0..65535)")
    return port


def _dimension(text: str) -> int:
    dimension = int(text)
    if dimension < 1:
        raise argparse.ArgumentTypeError(f"dimension must be at least 1, not {dimension}")
    return dimension


def _host(text: str) -> str:
    try:
        return loopback_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstream.testing",
        description="Serve a fake Ollama embed API on loopback until interrupted.",
    )
    parser.add_argument(
        "--host", type=_host, default="127.0.0.1", help="loopback address (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=11434, help="port, 0 for a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--dimension",
        type=_dimension,
        default=EMBED_DIMENSION,
        help="values per embedding (default: %(default)s)",
    )
    parser.add_argument(
        "--model", default=EMBED_MODEL, help="model listed by /api/tags (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    server = FakeOllama(host=args.host, port=args.port, model=args.model, dimension=args.dimension)
    try:
        server.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stopped = threading.Event()

    def on_terminate(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    previous = signal.signal(signal.SIGTERM, on_terminate)
    try:
        print(server.url, flush=True)
        print(
            f"fake Ollama: model {server.model}, {server.dimension} dimensions; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        # A timeout keeps the wait interruptible by Ctrl-C on every platform.
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
