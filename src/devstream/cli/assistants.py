"""`devstream mcp`, `hook` and `prime`: the commands assistants run."""

from __future__ import annotations

import json
import os
import sys

import click

from devstream.cli.output import Output, pass_output, run_async, with_store
from devstream.vocabulary import BRIEF_MAX_CHARS, HOOK_EVENTS

max_chars_option = click.option(
    "--max-chars",
    default=BRIEF_MAX_CHARS,
    show_default=True,
    type=click.IntRange(200),
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


@click.command("hook")
@click.argument("event", type=click.Choice(HOOK_EVENTS))
@max_chars_option
@click.pass_context
def hook(ctx: click.Context, event: str, max_chars: int) -> None:
    """Answer an assistant's hook call: the hook JSON on stdin, the answer on stdout.

    It fails open: on any error it prints one line on stderr, nothing on stdout, and exits
    0, so a broken store never blocks the assistant.
    """
    try:
        from devstream.hooks import handle  # noqa: PLC0415

        flags = ctx.find_root().params
        store_flags = {name: flags[name] for name in ("db", "ollama_url", "embed_model")}
        answer = run_async(handle(event, sys.stdin.read(), store_flags, max_chars=max_chars))
    except Exception as exc:  # fail open, whatever went wrong
        click.echo(f"devstream hook {event}: {type(exc).__name__}: {exc}", err=True)
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
