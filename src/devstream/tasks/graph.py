"""Dependency graphs: whether a new edge would close a cycle."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable


def cycle_through(edges: Iterable[tuple[int, int]], task: int, depends_on: int) -> list[int] | None:
    """The cycle that the edge `task -> depends_on` would close, as a path from `task` back
    to itself, or None. Edges read "task depends on task"."""
    if task == depends_on:
        return [task, task]
    waits_on: defaultdict[int, list[int]] = defaultdict(list)
    for source, target in edges:
        waits_on[source].append(target)
    # Depth-first from the new prerequisite: reaching `task` again closes the cycle.
    trail: dict[int, int | None] = {depends_on: None}
    stack = [depends_on]
    while stack:
        node = stack.pop()
        for nxt in waits_on[node]:
            if nxt in trail:
                continue
            trail[nxt] = node
            if nxt == task:
                return _path(trail, task)
            stack.append(nxt)
    return None


def find_cycle(edges: Iterable[tuple[int, int]]) -> list[int]:
    """The tasks on or behind a cycle among these edges (empty: there is none), sorted.

    Kahn's algorithm: tasks nothing waits on are peeled off one by one; whatever is left
    waits, directly or not, on a cycle."""
    edges = list(edges)
    waiting: defaultdict[int, int] = defaultdict(int)  # edges into each task still unpeeled
    waited_on_by: defaultdict[int, list[int]] = defaultdict(list)
    for task, depends_on in edges:
        waiting[depends_on] += 1
        waited_on_by[task].append(depends_on)
        waiting.setdefault(task, 0)
    free = [task for task, count in waiting.items() if count == 0]
    while free:
        task = free.pop()
        for depends_on in waited_on_by[task]:
            waiting[depends_on] -= 1
            if waiting[depends_on] == 0:
                free.append(depends_on)
        del waiting[task]
    return sorted(waiting)


def _path(trail: dict[int, int | None], end: int) -> list[int]:
    """task -> depends_on -> ... -> task, from the search's back-pointers."""
    path = [end]
    node = trail[end]
    while node is not None:
        path.append(node)
        node = trail[node]
    return [end, *reversed(path)]
