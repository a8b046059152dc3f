"""The mutation session's helpers: counting cosmic-ray's results, what is skipped, the plan."""

from __future__ import annotations

import json
from typing import Any

import noxfile
import pytest

from ci.mutation import Mutant, Tally, annotation_spans, compiles, in_annotation, parse_dump
from tests.support import REPO_ROOT


def dump_line(result: dict[str, Any] | None, line: int = 7) -> str:
    """One line of `cosmic-ray dump`: a work item and its result (None: not run yet)."""
    mutation = {
        "module_path": "src/devstream/x.py",
        "operator_name": "core/NumberReplacer",
        "occurrence": 0,
        "start_pos": [line, 4],
        "end_pos": [line, 5],
        "operator_args": {},
        "definition_name": None,
    }
    return json.dumps([{"job_id": "j", "mutations": [mutation]}, result])


def result(worker: str, test: str | None, output: str = "1 failed") -> dict[str, Any]:
    return {"worker_outcome": worker, "test_outcome": test, "output": output, "diff": "- a\n+ b"}


def test_each_result_gets_its_status_and_a_timeout_is_not_a_kill() -> None:
    lines = [
        dump_line(result("normal", "killed")),
        dump_line(result("normal", "killed")),
        dump_line(result("normal", "survived", "3 passed")),
        dump_line(result("normal", "killed", "timeout")),
        dump_line(result("skipped", None, "in an annotation, which is never evaluated")),
        dump_line(result("exception", "incompetent", "Traceback ...")),
        dump_line(None),
        "",
    ]
    mutants = parse_dump(lines)
    assert [m.status for m in mutants] == [
        "killed",
        "killed",
        "survived",
        "timeout",
        "skipped",
        "incompetent",
        "incompetent",
    ]
    assert mutants[0] == Mutant("src/devstream/x.py", 7, "NumberReplacer", "killed", "- a\n+ b")
    assert mutants[-1].diff == ""
    tally = Tally.of(mutants)
    assert tally == Tally(killed=2, survived=1, timeout=1, incompetent=2, skipped=1)
    assert tally.total == 6
    assert tally.score == pytest.approx(100 * 2 / 6)


def test_no_mutants_score_zero() -> None:
    assert (Tally().total, Tally().score) == (0, 0.0)


SOURCE = """\
def f(é: int, x: "ééééé" = 1 | 2, *, y: int | None = None) -> dict[str, int | None]:
    z: float | None = 3 | 4
"""


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        ("int | None", True),  # a parameter's
        ('"ééééé"', True),
        ("dict[str, int | None]", True),  # the return's
        ("float | None", True),  # a variable's
        ("1 |", False),  # a default value runs (columns count characters, not UTF-8 bytes)
        ("3 | 4", False),  # so does an assigned one
        ("*", False),
    ],
)
def test_annotations_are_found_by_character_position(text: str, inside: bool) -> None:
    spans = annotation_spans(SOURCE)
    number, line = next((n, line) for n, line in enumerate(SOURCE.splitlines(), 1) if text in line)
    column = line.index(text)
    assert in_annotation((number, column), (number, column + len(text)), spans) is inside


def test_a_mutant_that_is_not_python_is_found() -> None:
    assert compiles("def f(a, *, b): pass")
    assert not compiles("def f(a, +, b): pass")


def test_the_mutated_modules_and_their_tests_exist_and_defer_annotations() -> None:
    """Skipping mutants inside annotations is sound only where they are never evaluated."""
    for module, arguments in noxfile.MUTATED.items():
        source = (REPO_ROOT / module).read_text(encoding="utf-8")
        assert "from __future__ import annotations" in source, module
        tests = [a for a in arguments if a.startswith("tests/")]
        assert tests, module
        assert all((REPO_ROOT / test).is_file() for test in tests), module
