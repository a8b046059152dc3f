"""The rules tasks follow without a database: status flows and dependency cycles."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from devstream.errors import IllegalTransition
from devstream.tasks.graph import cycle_through
from devstream.tasks.states import PLAN_FLOW, TASK_FLOW, check
from devstream.vocabulary import PLAN_STATUSES, TASK_STATUSES


def test_a_new_edge_closing_a_cycle_is_named_from_the_task_back_to_itself() -> None:
    # 4 -> 3 -> 2 -> 1, and 4 -> 2 as well (a diamond's shortcut).
    edges = [(4, 3), (3, 2), (2, 1), (4, 2)]
    assert cycle_through(edges, 1, 4) in ([1, 4, 2, 1], [1, 4, 3, 2, 1])
    assert cycle_through(edges, 1, 1) == [1, 1]
    assert cycle_through(edges, 5, 4) is None  # a new task waiting on the top is fine
    assert cycle_through(edges, 4, 1) is None  # an edge already implied is no cycle


def test_diamonds_are_not_cycles() -> None:
    # 4 waits on 2 and 3, both wait on 1: adding 5 -> 4 visits 1 twice, finds nothing.
    edges = [(4, 2), (4, 3), (2, 1), (3, 1)]
    assert cycle_through(edges, 5, 4) is None
    assert cycle_through(edges, 1, 4) in ([1, 4, 2, 1], [1, 4, 3, 1])


@pytest.mark.parametrize(
    ("current", "requested", "allowed"),
    [
        ("pending", "active", True),
        ("pending", "skipped", True),
        ("pending", "completed", False),
        ("active", "completed", True),
        ("active", "failed", True),
        ("active", "pending", False),
        ("failed", "pending", True),
        ("failed", "active", False),
        ("completed", "pending", False),
        ("skipped", "active", False),
    ],
)
def test_task_flow(current: str, requested: str, allowed: bool) -> None:
    if allowed:
        check(TASK_FLOW, "task", 1, current, requested)
    else:
        with pytest.raises(IllegalTransition) as refused:
            check(TASK_FLOW, "task", 1, current, requested)
        assert (refused.value.current, refused.value.requested) == (current, requested)
        assert f"task 1 is {current}; it cannot become {requested}" in str(refused.value)


def test_plan_flow_ends_in_archived_or_cancelled() -> None:
    assert PLAN_FLOW["draft"] == ("active", "cancelled")
    assert PLAN_FLOW["completed"] == ("archived",)
    with pytest.raises(IllegalTransition, match="none: it is final"):
        check(PLAN_FLOW, "plan", 2, "cancelled", "active")


@pytest.mark.parametrize(
    ("flow", "statuses"),
    [(PLAN_FLOW, PLAN_STATUSES), (TASK_FLOW, TASK_STATUSES)],
    ids=["plan", "task"],
)
def test_each_flow_covers_exactly_the_statuses_the_schema_allows(
    flow: Mapping[str, tuple[str, ...]], statuses: tuple[str, ...]
) -> None:
    assert sorted(flow) == sorted(statuses)
    assert {status for targets in flow.values() for status in targets} <= set(statuses)
