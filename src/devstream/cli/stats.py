"""`devstream stats`: what the store holds and what this process measured."""

from __future__ import annotations

import json
from typing import Any

import click

from devstream.cli.output import Output, pass_output, with_store


@click.command("stats")
@pass_output
def stats(out: Output) -> None:
    """Work done, durations, transitions, context injected, memories; this process's metrics."""
    report = with_store(out, lambda ds: ds.report())
    out.emit(report, stats_text(report))


def stats_text(report: dict[str, Any]) -> str:
    """The report as indented sections: one line per figure."""
    lines: list[str] = []

    def walk(value: Any, depth: int) -> None:
        for key, item in value.items():
            if isinstance(item, dict):
                lines.append(f"{'  ' * depth}{key}:" + ("" if item else " none"))
                walk(item, depth + 1)
            else:
                shown = f"{item:,.3f}" if isinstance(item, float) else json.dumps(item)
                lines.append(f"{'  ' * depth}{key}: {shown}")

    walk(report, 0)
    return "\n".join(lines)
