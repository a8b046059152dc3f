"""`devstream export` and `devstream import`: move a store's contents as JSON Lines."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from devstream.cli.output import Output, counted, memories, pass_output, progress_bar, with_store
from devstream.errors import OutputFailed, StorageError

if TYPE_CHECKING:
    from devstream.app import DevStream
    from devstream.transfer import ExportReport, ImportReport


@click.command("export")
@click.option(
    "-o",
    "--output",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (replaced whole, only once the export is complete; a device or "
    "a pipe is written as the export goes).",
)
@click.option("--with-embeddings", is_flag=True, help="Include every memory's vector.")
@pass_output
def export_command(out: Output, target: Path | None, with_embeddings: bool) -> None:
    """Write the whole store as JSON Lines, to stdout unless -o names a file."""
    from devstream import transfer  # noqa: PLC0415

    def work(stream: IO[str]) -> ExportReport:
        async def run(ds: DevStream) -> ExportReport:
            return await transfer.export(ds, stream, embeddings=with_embeddings)

        return with_store(out, run)

    if target is None or _is_stdout(target):
        report = _written_to_stdout(work)
        click.echo(_exported(report), err=True)
        return
    report = _written(target, work)
    out.emit(asdict(report), f"{_exported(report)} to {target}")


def _is_stdout(target: Path) -> bool:
    """Whether `target` is the file stdout writes to (`/dev/stdout`, `/proc/self/fd/1`): the
    export then goes there as it would without -o, and its summary to stderr."""
    try:
        named, ours = target.stat(), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no such file; stdout closed or replaced
        return False
    return os.path.samestat(named, ours)


def _written_to_stdout(work: Callable[[IO[str]], ExportReport]) -> ExportReport:
    if sys.stdout is None:  # closed by the caller
        raise OutputFailed("stdout is closed", hint="name a file with -o")
    with _writing_to("stdout"):
        try:
            report = work(sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped (`| head`): end quietly, as shell tools do, and let nothing
            # flush into the closed pipe at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
    return report


def _written(target: Path, work: Callable[[IO[str]], ExportReport]) -> ExportReport:
    """Run `work` on what `target` names, through symlinks: a regular file (or a new one) is
    replaced whole once the export is complete, and anything else (a device, a pipe) is
    written as the export goes; it is never replaced by a file."""
    try:
        mode = target.stat().st_mode  # through symlinks (/dev/stdout names a pipe's fd)
    except FileNotFoundError:
        mode = stat.S_IFREG  # a new file
    if stat.S_ISDIR(mode):
        raise OutputFailed(f"cannot write the export to {target}: it is a folder")
    with _writing_to(str(target)):
        if not stat.S_ISREG(mode):
            with target.open("w", encoding="utf-8", newline="\n") as stream:
                return work(stream)
        return _replaced_whole(target.resolve(), work)


@contextlib.contextmanager
def _writing_to(where: str) -> Iterator[None]:
    """A failure to write (a missing or read-only folder, a full disk) as OutputFailed."""
    try:
        yield
    except OSError as exc:
        raise OutputFailed(f"cannot write the export to {where}: {exc.strerror or exc}") from exc


def _replaced_whole(target: Path, work: Callable[[IO[str]], ExportReport]) -> ExportReport:
    """Run `work` on a temporary file beside `target`, then put it in its place."""
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as stream:
            report = work(stream)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return report


# How one, and more than one, of each kind of row reads.
_NAMES = {
    "plan": ("plan", "plans"),
    "phase": ("phase", "phases"),
    "task": ("task", "tasks"),
    "dependency": ("dependency", "dependencies"),
    "task_event": ("task event", "task events"),
    "memory": ("memory", "memories"),
    "context_injection": ("context injection", "context injections"),
}


def _counted(counts: Mapping[str, int]) -> str:
    return ", ".join(counted(n, *_NAMES[kind]) for kind, n in counts.items() if n) or "nothing"


def _exported(report: ExportReport) -> str:
    return f"exported {_counted(report.rows)} (export {report.export_id})"


@click.command("import")
# Bytes that are not UTF-8 come through as surrogates, so the check can name their line.
@click.argument("source", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@click.option("--dry-run", is_flag=True, help="Check the file and say what it would add.")
@pass_output
def import_command(out: Output, source: IO[str], dry_run: bool) -> None:
    """Import an export (a file, or - for stdin); a rerun after a kill adds nothing twice."""
    from devstream import transfer  # noqa: PLC0415

    if dry_run:  # a store it would never make: a missing one is the first thing to say
        out.settings.check_store_exists()
    # The whole file is checked before the store is opened: a refused file leaves no new
    # store behind, and migrates no old one.
    with transfer.checked(source) as export, progress_bar(out, "import") as progress:

        async def run(ds: DevStream) -> tuple[ImportReport, int | None]:
            report = await transfer.import_checked(ds, export, dry_run=dry_run, progress=progress)
            if dry_run:
                return report, None
            if report.added["memory"]:
                await _ready_to_search(out, ds)
            return report, await ds.memory.waiting()

        report, waiting = with_store(out, run, creates=not dry_run)
    verb = "would add" if dry_run else "added"
    text = (
        f"{verb} {_counted(report.added)}; {memories(report.matched)} already here; "
        f"{report.resumed} rows imported by an earlier run (export {report.export_id})"
    )
    if waiting:
        # An export without --with-embeddings brings memories that search by full text alone.
        text += f"\n{memories(waiting)} waiting to be embedded: run `devstream memory backfill`"
    document = {**asdict(report), "added": dict(report.added), "waiting_to_embed": waiting}
    out.emit(document, text)


async def _ready_to_search(out: Output, ds: DevStream) -> None:
    """Make search ready for what was imported, here rather than in the first search (an
    import is where a user waits). The import stands whether this works or not."""
    out.note("making the search index ready for the new memories")
    try:
        await ds.memory.catch_up()
    except StorageError as exc:
        out.note(f"the first search will make it instead: {exc}")
