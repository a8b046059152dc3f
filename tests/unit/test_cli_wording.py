"""How the CLI words counts: one of a thing is singular."""

from __future__ import annotations

from devstream.cli.output import memories
from devstream.cli.transfer import _counted


def test_a_count_of_one_is_singular() -> None:
    assert [memories(n) for n in (0, 1, 2)] == ["0 memories", "1 memory", "2 memories"]
    counts = {"plan": 1, "phase": 0, "dependency": 2, "task_event": 1, "memory": 3}
    assert _counted(counts) == "1 plan, 2 dependencies, 1 task event, 3 memories"
    assert _counted({"plan": 0}) == "nothing"
