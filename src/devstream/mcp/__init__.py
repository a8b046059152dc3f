"""DevStream for assistants over the Model Context Protocol: `devstream mcp`."""

from devstream.mcp.http import TOKEN_ENV, serve_http
from devstream.mcp.server import TOOLS_ENV, build_server, embedding_pending, selected, serve_stdio
from devstream.mcp.tools import CORE, Spec

__all__ = [
    "CORE",
    "TOKEN_ENV",
    "TOOLS_ENV",
    "Spec",
    "build_server",
    "embedding_pending",
    "selected",
    "serve_http",
    "serve_stdio",
]
