"""What every command receives, and how results are printed: text or one JSON document."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click

from devstream.config import Settings


@dataclass(frozen=True)
class Output:
    """The merged settings and where a command's result goes."""

    settings: Settings
    as_json: bool

    def emit(self, document: dict[str, Any], text: str) -> None:
        # JSON escapes anything the terminal could not encode (lone surrogates included).
        click.echo(json.dumps(document, indent=2, default=str) if self.as_json else text)


pass_output = click.make_pass_decorator(Output)


def printable(text: str) -> str:
    """Text safe to write to any UTF-8 terminal: unencodable characters become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8")
