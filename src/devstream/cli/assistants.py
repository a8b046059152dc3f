"""`devstream mcp`: the commands assistants run."""

from __future__ import annotations

import os

import click

from devstream.cli.output import Output, pass_output, run_async


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
