"""Mutation testing of the error-handling code with cosmic-ray, on one HTTP worker per core.

    python -m ci.mutation --threshold 80 --plan '{"src/x.py": ["tests/unit/test_x.py"]}'

`nox -s mutation` passes the plan (each module with the pytest arguments that exercise it)
and the threshold. Every worker mutates a copy of the tree of its own, so the checkout is
never touched, and each module gets a cosmic-ray session whose test command runs only its
tests. Before the run, mutants that cannot change behaviour are skipped: those inside
annotations (every module has `from __future__ import annotations`, so annotations are
never evaluated) and those that are not valid Python (a `*` marker turned into `+`).

The rest are counted: killed, survived, timed out (cosmic-ray reports a timeout as killed;
here it is not) and incompetent (the worker failed). The score is killed / counted.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK_DIR = ROOT / ".mutation"
COPIED = ("src", "tests", "pyproject.toml")
# Stop at the first failure; fixed order and seeds, so that a verdict can be reproduced; each
# worker's temporary and database files in its own copy. Plain asserts: with no bytecode
# written (cosmic-ray's choice), rewriting them would recompile every plugin on every run.
PYTEST = [
    *(sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"),
    *("--assert=plain", "--basetemp=.pytest-tmp", "--hypothesis-seed=0"),
]
# A mutant whose tests run this much longer than the unmutated baseline has timed out.
TIMEOUT_FACTOR = 3.0
TIMEOUT_MARGIN_S = 15.0
BASELINE_TIMEOUT_S = 900.0
WORKER_START_S = 60.0
COSMIC_RAY = str(Path(sys.executable).with_name("cosmic-ray"))  # the one beside this Python

SKIPPED = "skipped"
STATUSES = ("killed", "survived", "timeout", "incompetent", SKIPPED)

Plan = Mapping[str, Sequence[str]]  # module path -> pytest arguments


# --- Counting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    operator: str
    status: str  # one of STATUSES
    diff: str


@dataclass(frozen=True)
class Tally:
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    incompetent: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        """The mutants that ran: all but the skipped."""
        return self.killed + self.survived + self.timeout + self.incompetent

    @property
    def score(self) -> float:
        """Killed as a percentage of the total; a timeout is not a kill."""
        return 100.0 * self.killed / self.total if self.total else 0.0

    @classmethod
    def of(cls, mutants: Iterable[Mutant]) -> Tally:
        counts = Counter(mutant.status for mutant in mutants)
        return cls(**{status: counts[status] for status in STATUSES})


def status(result: Mapping[str, Any] | None) -> str:
    """The status of one result of `cosmic-ray dump`; a mutant without one never ran."""
    if result is None:
        return "incompetent"
    if result["worker_outcome"] == "skipped":
        return SKIPPED
    outcome = result["test_outcome"]
    if outcome == "killed":
        # cosmic-ray's own word for a test run it stopped.
        return "timeout" if result["output"] == "timeout" else "killed"
    return "survived" if outcome == "survived" else "incompetent"


def parse_dump(lines: Iterable[str]) -> list[Mutant]:
    """The mutants of `cosmic-ray dump` output: one JSON [work item, result] per line."""
    mutants = []
    for line in lines:
        if not line.strip():
            continue
        item, result = json.loads(line)
        (mutation,) = item["mutations"]
        mutants.append(
            Mutant(
                module=mutation["module_path"],
                line=mutation["start_pos"][0],
                operator=mutation["operator_name"].rpartition("/")[2],
                status=status(result),
                diff=(result or {}).get("diff") or "",
            )
        )
    return mutants


# --- What cannot change behaviour ---------------------------------------------------------

Position = tuple[int, int]  # (line from 1, column in characters from 0), as cosmic-ray counts
Span = tuple[Position, Position]


def annotation_spans(source: str) -> list[Span]:
    """Where the annotations of a module are: its parameters', returns' and variables'."""
    lines = source.splitlines()

    def position(line: int, offset: int) -> Position:  # ast counts UTF-8 bytes
        return line, len(lines[line - 1].encode()[:offset].decode())

    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.arg | ast.AnnAssign):
            annotation = node.annotation
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotation = node.returns
        else:
            continue
        if annotation is not None and annotation.end_lineno is not None:
            start = position(annotation.lineno, annotation.col_offset)
            end = position(annotation.end_lineno, annotation.end_col_offset or 0)
            spans.append((start, end))
    return spans


def in_annotation(start: Position, end: Position, spans: Sequence[Span]) -> bool:
    return any(low <= start and end <= high for low, high in spans)


def compiles(code: str) -> bool:
    try:
        compile(code, "<mutant>", "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def skip_reason(work_item: Any, source: str, spans: Sequence[Span]) -> str:
    """Why a mutant is skipped ("" if it is not): cosmic-ray work items, untyped."""
    from cosmic_ray import plugins  # noqa: PLC0415 - installed in the mutation session only
    from cosmic_ray.mutating import mutate_code  # noqa: PLC0415

    (mutation,) = work_item.mutations
    if in_annotation(tuple(mutation.start_pos), tuple(mutation.end_pos), spans):
        return "in an annotation, which is never evaluated"
    operator = plugins.get_operator(mutation.operator_name)(**mutation.operator_args)
    mutated = mutate_code(source, operator, mutation.occurrence)
    return "" if mutated is not None and compiles(mutated) else "not valid Python"


def skip_inert(session: Path, source: str) -> int:
    """Mark the mutants of a session that cannot change behaviour as skipped."""
    from cosmic_ray.work_db import WorkDB, use_db  # noqa: PLC0415
    from cosmic_ray.work_item import WorkerOutcome, WorkResult  # noqa: PLC0415

    spans = annotation_spans(source)
    skipped = 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for work_item in db.pending_work_items:
            reason = skip_reason(work_item, source, spans)
            if reason:
                db.set_result(
                    work_item.job_id,
                    WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=reason),
                )
                skipped += 1
    return skipped


# --- Running ------------------------------------------------------------------------------


def copy_tree(target: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WORKER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker on port {port} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"no worker listened on port {port} within {WORKER_START_S:g} s")


@contextmanager
def workers(count: int) -> Iterator[list[str]]:
    """`count` cosmic-ray HTTP workers, each in a copy of the tree; yields their URLs.

    A worker's tests import that copy's `src` (PYTHONPATH comes before site-packages), and
    so do the processes they start."""
    with ExitStack() as stack:
        urls = []
        for index in range(count):
            copy = WORK_DIR / f"worker-{index}"
            copy_tree(copy)
            port = free_port()
            env = {**os.environ, "PYTHONPATH": str(copy / "src"), "DEVSTREAM_TEST_LOOP": "asyncio"}
            log = stack.enter_context((WORK_DIR / f"worker-{index}.log").open("wb"))
            command = [COSMIC_RAY, "http-worker", "--port", str(port)]
            process = subprocess.Popen(command, cwd=copy, env=env, stdout=log, stderr=log)
            stack.callback(stop, process)
            wait_for_port(port, process)
            urls.append(f"http://127.0.0.1:{port}")
        yield urls


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_config(
    path: Path, module: str, tests: Sequence[str], urls: list[str], timeout: float
) -> None:
    from cosmic_ray.config import serialize_config  # noqa: PLC0415

    config = {
        "module-path": module,
        "timeout": timeout,
        "excluded-modules": [],
        "test-command": shlex.join([*PYTEST, *tests]),
        "distributor": {"name": "http", "http": {"worker-urls": urls}},
    }
    path.write_text(serialize_config(config), encoding="utf-8")


def cosmic_ray(*args: str | Path) -> str:
    done = subprocess.run(
        [COSMIC_RAY, *map(str, args)],
        cwd=WORK_DIR / "worker-0",
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return done.stdout


def mutate(module: str, tests: Sequence[str], urls: list[str]) -> list[Mutant]:
    """One module's session: init, skip what cannot change behaviour, baseline, run."""
    name = module.replace("/", "-").removesuffix(".py")
    config, session = WORK_DIR / f"{name}.toml", WORK_DIR / f"{name}.sqlite"
    write_config(config, module, tests, urls, BASELINE_TIMEOUT_S)
    cosmic_ray("init", config, session)
    skipped = skip_inert(session, (WORK_DIR / "worker-0" / module).read_text(encoding="utf-8"))
    started = time.monotonic()
    cosmic_ray("baseline", config)  # the tests pass on the unmutated copy
    baseline_s = time.monotonic() - started
    timeout = math.ceil(TIMEOUT_FACTOR * baseline_s + TIMEOUT_MARGIN_S)
    print(
        f"{module}: baseline {baseline_s:.1f} s, timeout {timeout} s, {skipped} skipped", flush=True
    )
    write_config(config, module, tests, urls, timeout)
    cosmic_ray("exec", config, session)
    return parse_dump(cosmic_ray("dump", session).splitlines())


# --- Reporting ----------------------------------------------------------------------------


def report(mutants: Sequence[Mutant]) -> Tally:
    """Print each survivor, the counts per module and in all; return the overall counts."""
    for mutant in mutants:
        if mutant.status in ("survived", "timeout", "incompetent"):
            changed = [line for line in mutant.diff.splitlines() if line[:1] in "+-"]
            change = " | ".join(line for line in changed if line[:3] not in ("+++", "---"))
            print(f"{mutant.status}: {mutant.module}:{mutant.line} {mutant.operator}: {change}")
    print(
        f"{'module':<40} {'total':>6} {'killed':>7} {'survived':>9} {'timeout':>8}"
        f" {'incompetent':>12} {'skipped':>8} {'score':>7}"
    )
    modules = sorted({mutant.module for mutant in mutants})
    for module in [*modules, "all"]:
        tally = Tally.of(m for m in mutants if module in ("all", m.module))
        print(
            f"{module:<40} {tally.total:>6} {tally.killed:>7} {tally.survived:>9}"
            f" {tally.timeout:>8} {tally.incompetent:>12} {tally.skipped:>8}"
            f" {tally.score:>6.1f}%"
        )
    return Tally.of(mutants)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mutation testing of the error-handling code.")
    parser.add_argument("--plan", required=True, help="JSON: module path -> pytest arguments")
    parser.add_argument("--threshold", type=float, required=True, help="least score, in %%")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    plan: Plan = json.loads(args.plan)
    # Stopped from outside, the run still stops its workers on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir()
    started = time.monotonic()
    with workers(args.workers) as urls:
        mutants = [
            mutant for module, tests in plan.items() for mutant in mutate(module, tests, urls)
        ]
    tally = report(mutants)
    minutes = (time.monotonic() - started) / 60
    print(
        f"mutation score {tally.score:.1f}% ({tally.killed} killed of {tally.total};"
        f" threshold {args.threshold:g}%) in {minutes:.1f} min"
    )
    return 0 if tally.score >= args.threshold else 1


if __name__ == "__main__":
    sys.exit(main())
