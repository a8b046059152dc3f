"""Progress of a plan and its phases, derived from the states of their tasks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from devstream.db.records import MicroTask, Phase, Plan
from devstream.vocabulary import DONE


@dataclass(frozen=True)
class PhaseProgress:
    phase: Phase
    counts: dict[str, int]  # tasks by status, "blocked" apart from the other pending ones

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.counts.get(state, 0) for state in DONE)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.done == self.total

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0


@dataclass(frozen=True)
class PlanProgress:
    """A plan, its phases' progress, and the tasks it was derived from (one snapshot)."""

    plan: Plan
    phases: list[PhaseProgress]
    tasks: list[MicroTask]
    blocked: set[int]  # pending tasks behind an unfinished dependency

    @property
    def total(self) -> int:
        return sum(phase.total for phase in self.phases)

    @property
    def done(self) -> int:
        return sum(phase.done for phase in self.phases)

    @property
    def complete(self) -> bool:
        return bool(self.phases) and all(phase.complete for phase in self.phases)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0

    def why_incomplete(self) -> tuple[str, str] | None:
        """What keeps the plan from being completed and what to do about it, or None."""
        plan = self.plan.id
        if not self.phases:
            return f"plan {plan} has no phases", "add a phase and its tasks, or cancel the plan"
        empty = [p.phase for p in self.phases if p.total == 0]
        if empty:
            named = ", ".join(f"#{phase.id} {phase.name}" for phase in empty)
            return (
                f"plan {plan} has phases without tasks: {named}",
                "add tasks to them, or remove them (`devstream phase remove PHASE_ID`)",
            )
        if self.done < self.total:
            return (
                f"plan {plan} has {self.total - self.done} unfinished task(s)",
                "complete or skip its tasks first, or cancel the plan",
            )
        return None


def progress_of(
    plan: Plan, phases: list[Phase], tasks: list[MicroTask], blocked: set[int]
) -> PlanProgress:
    counts: dict[int, Counter[str]] = {phase.id: Counter() for phase in phases}
    for task in tasks:
        counts[task.phase_id]["blocked" if task.id in blocked else task.status] += 1
    return PlanProgress(
        plan, [PhaseProgress(phase, dict(counts[phase.id])) for phase in phases], tasks, blocked
    )
