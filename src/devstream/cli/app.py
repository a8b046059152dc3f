"""`devstream`: parse, call the services, print text or JSON.

Errors are one line on stderr and a non-zero exit, never a traceback. The command modules
import the storage stack (SQLAlchemy, Alembic, numpy, httpx, rich) inside the commands that
use it, so `--version` and every `--help` load none of it.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click

from devstream.cli.assistants import hook, mcp, prime, setup
from devstream.cli.demo import demo
from devstream.cli.memory import context, memory
from devstream.cli.output import Output, json_document, pass_output, run_async, with_store
from devstream.cli.stats import stats
from devstream.cli.tasks import phase, plan, task
from devstream.cli.transfer import export_command, import_command
from devstream.config import ENV_PREFIX, PROJECT_DB, PROJECT_DIR, load_settings
from devstream.errors import DevStreamError, StorageError


def _version(ctx: click.Context, _param: click.Parameter, asked: bool) -> None:
    """`--version`: the installed version, as a JSON document after `--json` (eager too, so
    read first when it comes first)."""
    if not asked or ctx.resilient_parsing:
        return
    from importlib.metadata import version  # noqa: PLC0415 - only --version reads it

    number = version("devstream")
    as_json = ctx.params.get("as_json", False)
    click.echo(json.dumps({"version": number}) if as_json else f"devstream {number}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="PATH|URL", help="Database file or URL  [env: DEVSTREAM_DB]")
@click.option("--ollama-url", metavar="URL", help="Ollama server  [env: DEVSTREAM_OLLAMA_URL]")
@click.option("--embed-model", metavar="NAME", help="Embedding model  [env: DEVSTREAM_EMBED_MODEL]")
@click.option("--json", "as_json", is_flag=True, is_eager=True, help="Print one JSON document.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version and exit.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    db: str | None,
    ollama_url: str | None,
    embed_model: str | None,
    as_json: bool,
) -> None:
    """Local-first task and memory system for AI-assisted development."""
    if ctx.invoked_subcommand == "hook":
        return  # a hook loads its settings itself, for the cwd it is given, and fails open
    settings = load_settings({"db": db, "ollama_url": ollama_url, "embed_model": embed_model})
    ctx.obj = Output(settings, as_json)


@cli.command()
@click.option(
    "--project",
    is_flag=True,
    help=f"Create the store in ./{PROJECT_DIR}/, which commands run below here then use.",
)
@pass_output
def init(out: Output, project: bool) -> None:
    """Create the database, or migrate it to this version's schema."""
    if project:
        named = click.get_current_context().find_root().params.get("db") or os.environ.get(
            f"{ENV_PREFIX}DB"
        )
        if named:  # it would be made here, and then every command would use the named one
            raise click.UsageError(
                f"--project makes the store in ./{PROJECT_DIR}/, which --db (or "
                f"{ENV_PREFIX}DB) would override: leave them out"
            )
        out = replace(out, settings=replace(out.settings, db=str(_project_store())))
    state = with_store(out, lambda ds: ds.schema_status(), creates=True)
    url = out.settings.shown_database
    out.emit({"database": url, "schema": state.current}, f"ready: {url} (schema {state.current})")


@cli.command("doctor")
@pass_output
def doctor_command(out: Output) -> None:
    """Check the database, its schema and pragmas, and the embedding server and its model."""
    from devstream import doctor  # noqa: PLC0415

    checks = run_async(doctor.diagnose(out.settings))
    healthy = all(check.ok for check in checks)
    lines = [f"{'ok' if c.ok else 'FAIL':>4}  {c.name:<9} {c.detail}" for c in checks]
    out.emit({"healthy": healthy, "checks": [asdict(c) for c in checks]}, "\n".join(lines))
    if not healthy:
        sys.exit(1)


def _project_store() -> Path:
    """./.devstream/devstream.db, its folder made and kept out of version control."""
    folder = Path.cwd() / PROJECT_DIR
    ignore = folder / ".gitignore"
    try:
        folder.mkdir(exist_ok=True)
        if not ignore.exists():
            ignore.write_text("# DevStream's store: local to this machine.\n*\n", encoding="utf-8")
    except OSError as exc:
        problem = exc.strerror or exc
        raise StorageError(f"cannot create the project store in {folder}: {problem}") from exc
    return folder / PROJECT_DB


COMMANDS = (memory, context, plan, phase, task, stats, demo, mcp, hook, prime, setup)
for command in (*COMMANDS, export_command, import_command):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: usage and DevStream errors become one line on stderr."""
    args = sys.argv[1:] if argv is None else list(argv)
    if sys.stdin is None:  # closed by the caller: read as empty (`import -` then says so)
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - the process's stdin
    fail = _Failure(as_json="--json" in args[: args.index("--") if "--" in args else None])
    try:
        code = cli.main(args=args or ["--help"], prog_name="devstream", standalone_mode=False)
    except click.UsageError as exc:
        fail("usage", exc.format_message(), "see `devstream --help`", 2)
    except click.ClickException as exc:
        fail("usage", exc.format_message(), "", exc.exit_code)
    except DevStreamError as exc:
        fail(type(exc).__name__, exc.message, exc.hint, 1)
    except (click.Abort, KeyboardInterrupt):
        fail("interrupted", "interrupted", "", 130)
    sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """`devstream` as a process: `main`, then an exit that collects no garbage.

    The process ends right after: the cyclic collections of interpreter teardown would
    otherwise go over every object SQLAlchemy and numpy made (a fifth of a second here),
    only to free memory the exit frees anyway. Teardown still flushes and closes as usual.
    """
    try:
        main()
    finally:
        gc.freeze()


@dataclass(frozen=True)
class _Failure:
    """How an error ends the command: one line on stderr, and its exit code. With `--json`
    (anywhere before `--`, as click reads it) the line is a JSON object, for a caller that
    parses what it runs."""

    as_json: bool

    def __call__(self, kind: str, message: str, hint: str, code: int) -> None:
        if self.as_json:
            error = {"kind": kind, "message": message, "hint": hint or None, "exit": code}
            click.echo(json_document({"error": error}), err=True)
        else:
            click.echo(f"devstream: error: {message}{f' ({hint})' if hint else ''}", err=True)
        sys.exit(code)
