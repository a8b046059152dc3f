"""What every command receives, and how results are printed: text or one JSON document."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from devstream.config import Settings

if TYPE_CHECKING:
    from devstream.app import DevStream

T = TypeVar("T")


@dataclass(frozen=True)
class Output:
    """The merged settings and where a command's result goes."""

    settings: Settings
    as_json: bool

    def emit(self, document: dict[str, Any], text: str) -> None:
        # JSON escapes anything the terminal could not encode.
        click.echo(json_document(document, indent=2) if self.as_json else text)

    def note(self, text: str) -> None:
        """A line on stderr about work under way (none with `--json`)."""
        if not self.as_json:
            click.echo(text, err=True)


def json_document(document: dict[str, Any], indent: int | None = None) -> str:
    """The document as JSON, with every lone surrogate (an argument's undecodable byte,
    echoed back) as U+FFFD: strict parsers refuse its escape."""
    return json.dumps(_without_surrogates(document), indent=indent, default=_plain)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_surrogates(item) for item in value]
    return value


def _plain(value: object) -> str:
    """A value JSON has no type for: a time in ISO 8601 (`T` between date and time, as
    every parser takes it), anything else as its text."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def pass_output(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command the Output as its first argument, and its own `--json` flag (the same
    as the global one, so `devstream demo --json` works as well as `devstream --json demo`)."""

    @click.option("--json", "json_here", is_flag=True, help="Print one JSON document.")
    @click.pass_context
    @functools.wraps(command)
    def run(ctx: click.Context, /, *args: Any, json_here: bool, **kwargs: Any) -> T:
        out = ctx.find_object(Output)
        assert out is not None  # the group callback always sets it
        return command(replace(out, as_json=True) if json_here else out, *args, **kwargs)

    return run


def printable(text: str) -> str:
    """Text safe to write to any UTF-8 terminal: unencodable characters become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8")


def one_line(text: str) -> str:
    """Text on one line of a listing: a title or memory that holds line breaks (or runs of
    blanks) would break the listing's lines apart."""
    return " ".join(text.split())


def counted(count: int, one: str, many: str) -> str:
    """`1 memory`, `2 memories`."""
    return f"{count} {one if count == 1 else many}"


def memories(count: int) -> str:
    return counted(count, "memory", "memories")


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on a fresh event loop (asyncio alone weighs more than the rest of `--help`)."""
    import asyncio  # noqa: PLC0415

    return asyncio.run(work)


def with_store(
    out: Output, work: Callable[[DevStream], Awaitable[T]], *, creates: bool = False
) -> T:
    """Open the configured store, run `work` on it, close it. Only a command that
    `creates` what is worth a new store (init, a first plan or memory, an import) makes a
    SQLite store that does not exist yet, or gives a database without one DevStream's
    schema; any other refuses both (a store of an older version is still migrated)."""
    from devstream.app import DevStream  # noqa: PLC0415

    if not creates:
        out.settings.check_store_exists()

    async def run() -> T:
        async with DevStream.open(out.settings, create_schema=creates) as ds:
            return await work(ds)

    return run_async(run())


@contextmanager
def progress_bar(out: Output, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (none with `--json`); gives the (done, total) callback."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, console=Console(stderr=True), disable=out.as_json, transient=True
    ) as bar:
        task = bar.add_task(label, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield progress
