"""`devstream demo`: the tour, printed in named sections (or as one JSON document)."""

from __future__ import annotations

from typing import Any

import click

from devstream.cli.output import Output, memories, one_line, pass_output, printable, run_async

SNIPPET = 70


@click.command("demo")
@pass_output
def demo(out: Output) -> None:
    """Tour DevStream on a fresh temporary database, offline: plan, tasks, memory, metrics."""
    from devstream.demo import run_demo  # noqa: PLC0415

    document = run_async(run_demo())
    out.emit(document, printable(demo_text(document)))


def demo_text(doc: dict[str, Any]) -> str:
    plan = doc["plan"]
    sections = [
        _section(
            "Plan",
            [
                f"#{plan['id']} {one_line(plan['title'])} [{plan['status']}] "
                f"{plan['done']}/{plan['total']} tasks done"
            ]
            + [f"  {p['name']}: {p['status']}, {p['done']}/{p['total']}" for p in plan["phases"]],
        ),
        _section(
            "Tasks run",
            [
                f"#{r['task_id']:<3} {r['status']:<9} {one_line(r['title'])}"
                + (f" (retry {r['retry_count']})" if r["retry_count"] else "")
                for r in doc["tasks_run"]
            ],
        ),
        _section(
            "Context injected",
            [
                f"task #{i['task_id']:<3} {memories(len(i['memory_ids']))}, "
                f"{i['tokens']}/{i['budget']} tokens"
                for i in doc["context_injected"]
            ],
        ),
        _section(
            "Memories captured",
            [
                f"#{m['id']:<3} {m['content_type']:<9} from task #{m['task_id']} "
                f"({m['embedding_status']})"
                for m in doc["memories_captured"]
            ],
        ),
        _section(
            f"Search: {doc['search']['query']!r}"
            + (" (degraded)" if doc["search"]["degraded"] else ""),
            [
                f"#{h['id']:<3} {h['score']:.4f} {h['content_type']:<13} "
                + " ".join(h["content"].split())[:SNIPPET]
                for h in doc["search"]["hits"]
            ],
        ),
        _section("Metrics", _metric_lines(doc["metrics"])),
    ]
    return "\n\n".join(sections)


def _section(title: str, lines: list[str]) -> str:
    return "\n".join([f"== {title} ==", *lines])


def _metric_lines(report: dict[str, Any]) -> list[str]:
    store, process = report["store"], report["process"]
    durations = store["task_durations_s"]
    lines = [
        "transitions: " + ", ".join(f"{k} {v}" for k, v in store["transitions"].items()),
        f"task durations: {durations['count']} tasks, p50 {1000 * durations['p50']:.1f} ms, "
        f"p99 {1000 * durations['p99']:.1f} ms",
        f"context: {store['context']['injections']} injections, "
        f"{store['context']['tokens_injected']} tokens",
        "memories: "
        + ", ".join(f"{n} {k}" for k, n in store["memories"]["by_content_type"].items()),
    ]
    for name in ("workflow.start", "workflow.complete", "workflow.fail", "memory.search"):
        latency = process["latencies"][name]
        lines.append(
            f"{name}: {latency['count']} calls, p50 {latency['p50_ms']:.2f} ms, "
            f"p99 {latency['p99_ms']:.2f} ms"
        )
    resources = process["gauges"]["resources"]
    cpu = resources["cpu_user_s"] + resources["cpu_system_s"]
    rss = f"RSS {resources['rss_mib']:.0f} MiB, " if "rss_mib" in resources else ""
    lines.append(
        f"resources: {rss}CPU {cpu:.2f} s, {resources['open_connections']:.0f} open connections"
    )
    return lines
