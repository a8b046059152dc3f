"""`devstream mcp`, `hook`, `prime` and `setup`: the commands assistants run, and the one
that tells them to."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

import click

from devstream.cli.output import Output, pass_output, run_async, with_store
from devstream.vocabulary import BRIEF_MAX_CHARS, BRIEF_MIN_CHARS, HOOK_EVENTS

max_chars_option = click.option(
    "--max-chars",
    default=BRIEF_MAX_CHARS,
    show_default=True,
    type=click.IntRange(BRIEF_MIN_CHARS),
    help="Longest brief, in characters.",
)


@click.command("mcp")
@click.option(
    "--tools",
    metavar="core|all|NAME,...",
    help="Which tools to serve  [env: DEVSTREAM_MCP_TOOLS; default: core]",
)
@click.option(
    "--http",
    "bind",
    metavar="HOST:PORT",
    help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (beyond loopback "
    "it needs DEVSTREAM_MCP_TOKEN).",
)
@pass_output
def mcp(out: Output, tools: str | None, bind: str | None) -> None:
    """Serve this store to an assistant over MCP (stdio unless --http)."""
    from devstream.mcp import TOKEN_ENV, TOOLS_ENV, selected, serve_http, serve_stdio  # noqa: PLC0415

    chosen = selected(tools if tools is not None else os.environ.get(TOOLS_ENV))
    if bind is None:
        run_async(serve_stdio(out.settings, chosen))
        return
    token = os.environ.get(TOKEN_ENV) or None

    def announce(url: str) -> None:
        click.echo(f"devstream mcp: serving {url}", err=True)

    run_async(serve_http(out.settings, chosen, bind, token=token, announce=announce))


# Checked by the hook itself, which fails open: a value click refused would exit 2, which
# Claude Code takes for "block" (a settings file from another version may name an event
# this one does not know, or leave one out). So nothing here is required of click: no
# event, or `--max-chars` with no value, reach the hook as "" and are refused there.
@click.command("hook", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("event", metavar="{" + "|".join(HOOK_EVENTS) + "}", required=False, default="")
@click.option(
    "--max-chars",
    default=str(BRIEF_MAX_CHARS),
    is_flag=False,
    flag_value="",
    show_default=True,
    metavar="N",
    help=f"Longest brief, in characters ({BRIEF_MIN_CHARS} or more).",
)
@click.pass_context
def hook(ctx: click.Context, event: str, max_chars: str) -> None:
    """Answer an assistant's hook call: the hook JSON on stdin, the answer on stdout.

    It fails open: on any error (a bad argument included) it prints one line on stderr,
    nothing on stdout, and exits 0, so a broken store never blocks the assistant.
    """
    try:
        from devstream.hooks import handle  # noqa: PLC0415

        flags = ctx.find_root().params
        store_flags = {name: flags[name] for name in ("db", "ollama_url", "embed_model")}
        stdin = sys.stdin.read()
        answer = run_async(handle(event, stdin, store_flags, max_chars=max_chars, extra=ctx.args))
    except Exception as exc:  # fail open, whatever went wrong
        called = f"devstream hook {event}".rstrip()
        click.echo(f"{called}: {type(exc).__name__}: {exc}", err=True)
        return
    if answer is not None:
        click.echo(json.dumps(answer))


@click.command("prime")
@max_chars_option
@pass_output
def prime(out: Output, max_chars: int) -> None:
    """Print the brief a session starts with (for AGENTS.md, CLAUDE.md, or to read)."""
    from devstream.hooks import brief  # noqa: PLC0415

    text = with_store(out, lambda ds: brief(ds, max_chars=max_chars))
    out.emit({"brief": text, "chars": len(text)}, text or "nothing to brief: no tasks or memories")


@click.command("setup")
@click.argument("assistant", type=click.Choice(["claude", "codex"]))
@click.option(
    "--project", "scope", flag_value="project", default=True, help="This folder's files (default)."
)
@click.option("--user", "scope", flag_value="user", help="Your user's files, for every project.")
@click.option("--check", is_flag=True, help="Report what is installed; exit 1 if anything is not.")
@click.option("--remove", is_flag=True, help="Take out exactly what setup added.")
@pass_output
def setup(
    out: Output, assistant: Literal["claude", "codex"], scope: str, check: bool, remove: bool
) -> None:
    """Add DevStream's hooks and MCP server to an assistant's settings (merged, idempotent,
    backed up)."""
    from devstream import install  # noqa: PLC0415

    if check and remove:
        raise click.UsageError("--check and --remove do not go together")
    project = Path.cwd() if scope == "project" else None
    files = install.files_for(assistant, project=project, home=Path.home())
    if check:
        complete, lines = install.check(assistant, files, install.executable())
        out.emit({"installed": complete, "report": lines}, "\n".join(lines))
        if not complete:
            sys.exit(1)
        return
    lines = (
        install.remove(assistant, files)
        if remove
        else install.setup(assistant, files, install.executable())
    )
    out.emit({"changes": lines}, "\n".join(lines))
