"""`devstream memory ...` and `devstream context`: the semantic memory from the shell."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from devstream import documents
from devstream.cli.output import (
    Output,
    memories,
    one_line,
    pass_output,
    printable,
    progress_bar,
    with_store,
)
from devstream.vocabulary import CONTENT_TYPES

if TYPE_CHECKING:
    from devstream.app import DevStream
    from devstream.memory import AssembledContext, EmbedReport, SearchResult

SNIPPET = 72


@click.group()
def memory() -> None:
    """Store, search and maintain memories."""


@memory.command("add")
@click.argument("text")
@click.option("--type", "content_type", type=click.Choice(CONTENT_TYPES), required=True)
@click.option("--plan", "plan_id", type=int, help="Link to a plan.")
@click.option("--phase", "phase_id", type=int, help="Link to a phase.")
@click.option("--task", "task_id", type=int, help="Link to a task.")
@pass_output
def add(
    out: Output,
    *,
    text: str,
    content_type: str,
    plan_id: int | None,
    phase_id: int | None,
    task_id: int | None,
) -> None:
    """Store TEXT as a memory (stored once per scope; pending if embedding fails)."""
    from devstream.memory.service import NewMemory, check_new  # noqa: PLC0415

    item = NewMemory(text, content_type, plan_id=plan_id, phase_id=phase_id, task_id=task_id)
    check_new(item, out.settings.max_memory_chars)  # a refusal makes no store
    # What it links to must be in a store already.
    linked = plan_id is not None or phase_id is not None or task_id is not None
    (result,) = with_store(out, lambda ds: ds.memory.store_many([item]), creates=not linked)
    entry = result.entry
    if not result.created:
        line = f"already stored as memory #{entry.id}"
    else:
        line = f"stored memory #{entry.id} ({entry.embedding_status})"
    if result.warning:
        line += f"\nwarning: {result.warning}"
    out.emit(
        {
            "memory": documents.entry(entry),
            "created": result.created,
            "embedded": result.embedded,
            "warning": result.warning,
        },
        line,
    )


@memory.command("search")
@click.argument("query")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--type", "content_types", multiple=True, type=click.Choice(CONTENT_TYPES), help="Repeatable."
)
@click.option("--plan", "plan_id", type=int)
@click.option("--task", "task_id", type=int)
@click.option("--min-similarity", type=click.FloatRange(-1, 1), help="Cosine threshold.")
@pass_output
def search(
    out: Output,
    *,
    query: str,
    limit: int,
    content_types: tuple[str, ...],
    plan_id: int | None,
    task_id: int | None,
    min_similarity: float | None,
) -> None:
    """Hybrid full-text + vector search."""
    from devstream.memory import MemoryFilter  # noqa: PLC0415

    filters = MemoryFilter(frozenset(content_types), plan_id=plan_id, task_id=task_id)
    result = with_store(
        out,
        lambda ds: ds.memory.search(
            query, limit=limit, filters=filters, min_similarity=min_similarity
        ),
    )
    out.emit(documents.search(result), search_text(result))


def search_text(result: SearchResult) -> str:
    lines = [f"degraded: {result.reason}"] if result.degraded else []
    if not result.hits:
        lines.append("no matches")
    for hit in result.hits:
        similarity = "    -" if hit.similarity is None else f"{hit.similarity:5.2f}"
        snippet = one_line(hit.entry.content)[:SNIPPET]
        lines.append(
            f"#{hit.entry.id:<5} {hit.score:.4f} sim {similarity}  "
            f"{hit.entry.content_type:<13} {snippet}"
        )
    return printable("\n".join(lines))


@memory.command("show")
@click.argument("memory_id", type=int)
@pass_output
def show(out: Output, memory_id: int) -> None:
    """Print one memory (counts as a retrieval)."""
    entry = with_store(out, lambda ds: ds.memory.get(memory_id))
    links = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("plan", entry.plan_id),
            ("phase", entry.phase_id),
            ("task", entry.task_id),
        )
        if value is not None
    )
    text = "\n".join(
        [
            f"memory #{entry.id}  {entry.content_type}  {entry.embedding_status}"
            + (f"  ({links})" if links else ""),
            f"keywords: {entry.keywords}",
            "",
            entry.content,
        ]
    )
    out.emit({"memory": documents.entry(entry)}, printable(text))


@memory.command("delete")
@click.argument("memory_id", type=int)
@pass_output
def delete(out: Output, memory_id: int) -> None:
    """Delete one memory."""
    with_store(out, lambda ds: ds.memory.delete(memory_id))
    out.emit({"deleted": memory_id}, f"deleted memory #{memory_id}")


batch_size_option = click.option(
    "--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096)
)


@memory.command("backfill")
@batch_size_option
@click.option(
    "--retry-failed", is_flag=True, help="Try again the memories the server refused before."
)
@pass_output
def backfill(out: Output, batch_size: int, retry_failed: bool) -> None:
    """Embed memories stored while embedding was unavailable.

    A memory the server refuses on its own is set aside and the others are embedded; after
    3 refusals it is marked failed, with the reason kept, until --retry-failed.
    """
    _embed_waiting(out, "backfill", batch_size, retry_failed=retry_failed)


@memory.command("reembed")
@batch_size_option
@pass_output
def reembed(out: Output, batch_size: int) -> None:
    """Re-embed memories of another model or dimension (and pending ones)."""
    _embed_waiting(out, "reembed", batch_size)


def _embed_waiting(
    out: Output, action: str, batch_size: int, *, retry_failed: bool = False
) -> None:
    """Run backfill or reembed with a progress bar on stderr; exit 1 if it stopped early."""
    with progress_bar(out, action) as progress:

        async def work(ds: DevStream) -> EmbedReport:
            if action == "reembed":
                return await ds.memory.reembed(batch_size=batch_size, progress=progress)
            return await ds.memory.backfill(
                batch_size=batch_size, progress=progress, retry_failed=retry_failed
            )

        report = with_store(out, work)
    lines = [
        f"{action}: {report.embedded} embedded; {report.remaining} still waiting; "
        f"{len(report.set_aside)} set aside ({report.requests} requests)",
        *(f"  memory #{i} set aside: {printable(why)}" for i, why in report.set_aside.items()),
    ]
    if report.error:
        lines.append(f"stopped: {report.error}")
    out.emit(asdict(report), "\n".join(lines))
    if report.error:
        raise SystemExit(1)


@click.command("context")
@click.argument("query")
@click.option("--budget", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--plan", "plan_id", type=int, help="Prefer this plan's memories.")
@click.option("--per-type-cap", type=click.IntRange(1), help="At most N memories per type.")
@pass_output
def context(
    out: Output, query: str, budget: int, plan_id: int | None, per_type_cap: int | None
) -> None:
    """Assemble the most relevant memories for QUERY within a token budget."""
    from devstream.memory import assemble  # noqa: PLC0415

    assembled: AssembledContext = with_store(
        out,
        lambda ds: assemble(ds.memory, query, budget, plan_id=plan_id, per_type_cap=per_type_cap),
    )
    header = f"{memories(len(assembled.included))}, {assembled.tokens_used}/{budget} tokens"
    if assembled.degraded:
        header += " (degraded: full-text only)"
    out.emit(
        {
            "text": assembled.text,
            "memory_ids": assembled.memory_ids,
            "tokens_used": assembled.tokens_used,
            "budget": assembled.budget,
            "degraded": assembled.degraded,
            "included": [asdict(item) for item in assembled.included],
        },
        printable(f"{header}\n\n{assembled.text}" if assembled.text else header),
    )
