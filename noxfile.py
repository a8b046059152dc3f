"""DevStream's checks and test matrix.

`ci/test` runs the default sessions; `nox -l` lists every session, `nox -s NAME` runs one,
`nox -t TAG` runs all sessions with a tag (a loop such as `uvloop`, or a category such as
`database`). Arguments after `--` go to pytest or mypy, e.g. `nox -s unit -- -x`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

import nox

ROOT = Path(__file__).parent.resolve()
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")

# The matrix ---------------------------------------------------------------------------------

PYTHONS = nox.project.python_versions(PYPROJECT)  # from its classifiers, as ci/test reads them
LOOPS = ["asyncio", "uvloop"]
BACKENDS = ["sqlite", "postgresql"]  # postgresql: tests/postgres.py says which server
CATEGORIES = {
    "database": "tests/integration/test_database_integration.py",
    "memory_database": "tests/integration/test_memory_database_integration.py",
    "memory_index": "tests/integration/test_memory_index_integration.py",
    "tasks_memory": "tests/integration/test_tasks_memory_integration.py",
    "end_to_end": "tests/integration/test_end_to_end_workflows.py",
    "error_boundaries": "tests/integration/test_error_boundaries.py",
    "assistants": "tests/integration/test_assistants_integration.py",
}

# Mutation testing: the error-handling modules, each with the pytest arguments of the tests
# that exercise it (a run stops at its first failure). Left out: the multi-process, the
# pytester and the hostile-argument sweep tests, slow and aimed at other code.
MUTATED = {
    "src/devstream/db/pool.py": [
        "tests/integration/test_database_integration.py",
        "tests/integration/test_error_boundaries.py",
        *("-m", "not multiprocess"),
        *("-k", "not pollution_guard and not hostile_values and not any_values"),
    ],
    "src/devstream/memory/backfill.py": [
        "tests/integration/test_memory_database_integration.py",
        *("-k", "backfill or reembed or refuse"),
    ],
    "src/devstream/memory/breaker.py": ["tests/unit/test_ollama.py"],
    "src/devstream/memory/ollama.py": ["tests/unit/test_ollama.py"],
    "src/devstream/tasks/states.py": ["tests/unit/test_task_rules.py"],
}
MUTATION_THRESHOLD = 80.0  # killed, in % of the mutants that ran; a timeout is not a kill

OLDEST = PYTHONS[0]  # typecheck: matches `python_version` in [tool.mypy]
NEWEST = PYTHONS[-1]  # lint, unit
REPORT_PYTHON = "3.12"  # coverage, benchmark; the default run's PostgreSQL cells
# The parallel cells that collect coverage: the oldest Python (the imports only it takes)
# and the report Python (every backend and loop). The others run the same suite without
# the tracer, which about halves their time; the unit session collects coverage too.
COVERED_PYTHONS = (OLDEST, REPORT_PYTHON)

# Options ------------------------------------------------------------------------------------

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"
# The default run (ci/test): every parallel cell on SQLite, and on PostgreSQL one Python with
# both loops (`nox -t postgresql` runs every PostgreSQL cell).
DEFAULT_CELLS = [
    f"parallel-{python}({backend}, {loop})"
    for backend in BACKENDS
    for python in (PYTHONS if backend == "sqlite" else [REPORT_PYTHON])
    for loop in LOOPS
]
nox.options.sessions = ["lint", "typecheck", "unit", *DEFAULT_CELLS, "coverage"]

COVERAGE_DIR = ROOT / ".coverage-data"
BENCHMARK_RESULT = ROOT / ".benchmarks" / "figures.json"  # the latest run; its plot beside it
BENCHMARK_BASELINE = ROOT / "ci" / "benchmark-baseline.json"
FLAKY_DIR = ROOT / ".flaky"  # the flaky session's reports: .flaky/<backend>/<loop>/
LINT_PATHS = ["src", "tests", "noxfile.py", "ci"]
WORKFLOWS = ".github/workflows"


# Helpers ------------------------------------------------------------------------------------


def tagged(*values: str) -> list[nox.param]:
    """Parameters whose id and tag are the value itself: `nox -t uvloop` selects them."""
    return [nox.param(value, id=value, tags=[value]) for value in values]


def install(session: nox.Session, *groups: str) -> None:
    """Install the project (not editable) and the given dependency groups.

    A non-editable install runs the code from the venv's site-packages, the path that
    [tool.coverage.paths] maps back to src/. The project is reinstalled on every run, so a
    reused venv never tests stale sources: pip always reinstalls a local directory, and uv
    is told to.
    """
    rebuild = ["--reinstall-package", "devstream"] if session.venv_backend == "uv" else []
    session.install(*rebuild, ".", *nox.project.dependency_groups(PYPROJECT, *groups))


def installed_package_dir(session: nox.Session) -> str:
    """Where the venv's copy of devstream lives: the directory coverage measures."""
    output = session.run(
        "python",
        "-c",
        "import devstream, os; print(os.path.dirname(devstream.__file__))",
        silent=True,
    )
    return str(output).strip()


def hypothesis_seed(session: nox.Session) -> str:
    """One Hypothesis seed for the session's workers, printed so that a failure can be rerun:
    HYPOTHESIS_SEED=<seed> nox -s <session>."""
    seed = os.environ.get("HYPOTHESIS_SEED") or str(secrets.randbelow(2**32))
    session.log(f"hypothesis seed {seed} (rerun with HYPOTHESIS_SEED={seed})")
    return seed


def run_pytest(
    session: nox.Session,
    *args: str,
    loop: str,
    backend: str = "sqlite",
    coverage: bool = True,
    compiled: bool = False,
) -> None:
    """Install the test environment and run pytest on `loop` and `backend`, collecting
    coverage data.

    `compiled`: the venv's bytecode is written first, as pip writes it at install (uv does
    not), so that processes the tests start are timed as users run them.
    """
    install(session, "test")
    if compiled:
        compile_all = (
            "import compileall, sysconfig as s; compileall.compile_dir(s.get_path('purelib'))"
        )
        session.run("python", "-c", compile_all, silent=True)
    env = {"DEVSTREAM_TEST_LOOP": loop, "DEVSTREAM_TEST_BACKEND": backend}
    if coverage:
        # One data file prefix per session: pytest-cov erases `<COVERAGE_FILE>.*` when it
        # starts, so a shared prefix would let sessions delete each other's data.
        COVERAGE_DIR.mkdir(exist_ok=True)
        session_id = re.sub(r"[^A-Za-z0-9]+", "-", session.name).strip("-")
        env["COVERAGE_FILE"] = str(COVERAGE_DIR / f".coverage.{session_id}")
        # fail_under applies to the data of all sessions combined (the coverage session),
        # not to any one session's share.
        args = (*args, f"--cov={installed_package_dir(session)}", "--cov-report=")
        args = (*args, "--cov-fail-under=0")
    args = (*args, f"--hypothesis-seed={hypothesis_seed(session)}")
    # nox's default success_codes=[0] is kept on purpose: pytest's exit code 5
    # (no tests collected) fails the session.
    session.run("pytest", *args, *session.posargs, env=env)


# Test sessions ------------------------------------------------------------------------------


@nox.session(python=PYTHONS)
@nox.parametrize("loop", tagged(*LOOPS))
@nox.parametrize("backend", tagged(*BACKENDS))
@nox.parametrize("category", tagged(*CATEGORIES))
def integration(session: nox.Session, category: str, backend: str, loop: str) -> None:
    """One category of integration tests on one Python, backend and event loop."""
    run_pytest(session, CATEGORIES[category], "-q", loop=loop, backend=backend)


@nox.session(python=PYTHONS)
@nox.parametrize("loop", tagged(*LOOPS))
@nox.parametrize("backend", tagged(*BACKENDS))
def parallel(session: nox.Session, backend: str, loop: str) -> None:
    """All integration tests on one backend, spread over CPUs by pytest-xdist."""
    args = ("tests/integration/", "-n", "auto", "--dist", "loadgroup")
    covered = session.python in COVERED_PYTHONS
    run_pytest(session, *args, loop=loop, backend=backend, coverage=covered)


@nox.session(python=NEWEST)
@nox.parametrize("loop", tagged(*LOOPS))
@nox.parametrize("backend", tagged(*BACKENDS))
def flaky(session: nox.Session, backend: str, loop: str) -> None:
    """The integration suite N times in random orders under xdist while CPU burners keep
    every core busy, then each timing-sensitive test 100 times more; the pass rate per test
    (`-- --runs N --repeat N --repeated EXPR`, see ci/flaky.py). Not a default session."""
    install(session, "test")
    report_dir = FLAKY_DIR / backend / loop
    seed = f"--hypothesis-seed={hypothesis_seed(session)}"
    env = {"DEVSTREAM_TEST_LOOP": loop, "DEVSTREAM_TEST_BACKEND": backend}
    session.run(
        "python", "-m", "ci.flaky", f"--report-dir={report_dir}", seed, *session.posargs, env=env
    )


@nox.session(python=NEWEST)
def unit(session: nox.Session) -> None:
    """Unit tests, on every core (several start interpreters or run nox)."""
    run_pytest(session, "tests/unit", "-n", "auto", loop="asyncio")


@nox.session(python=REPORT_PYTHON)
def benchmark(session: nox.Session) -> None:
    """Benchmarks on uvloop, without xdist or coverage, then compared with the committed
    baseline as ratios to the run's calibration (ci/benchcheck.py): a slowdown beyond 1.3x
    fails. The figures (JSON) and a plot (PNG) are written to .benchmarks/."""
    # A run that records no figures must not be judged by an older file.
    BENCHMARK_RESULT.unlink(missing_ok=True)
    session.env["DEVSTREAM_BENCHMARK_JSON"] = str(BENCHMARK_RESULT)
    run_pytest(
        session,
        "tests/integration/",
        "--benchmark-only",
        "-p",
        "no:randomly",
        loop="uvloop",
        coverage=False,
        compiled=True,
    )
    plot = BENCHMARK_RESULT.with_suffix(".png")
    check = ["--baseline", str(BENCHMARK_BASELINE), "--plot", str(plot)]
    session.run("python", "-m", "ci.benchcheck", str(BENCHMARK_RESULT), *check)


@nox.session(python=REPORT_PYTHON)
def coverage(session: nox.Session) -> None:
    """Combine the data of the test sessions that ran; HTML, XML and terminal reports."""
    if not any(COVERAGE_DIR.glob(".coverage.*")):
        session.error(
            f"No coverage data in {COVERAGE_DIR}: run a test session first, e.g. nox -s unit"
        )
    session.install("coverage[toml]>=7.10")
    session.env["COVERAGE_FILE"] = str(ROOT / ".coverage")
    # --keep leaves the inputs in place, so this session can be run again; ci/test starts
    # every run from an empty .coverage-data/.
    session.run("coverage", "combine", "--keep", str(COVERAGE_DIR))
    # The HTML and XML reports are written even below the threshold; `report` enforces
    # fail_under from pyproject.toml.
    session.run("coverage", "html", "--fail-under=0")
    session.run("coverage", "xml", "--fail-under=0")
    session.run("coverage", "report")


@nox.session(python=REPORT_PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation testing (cosmic-ray) of the error-handling code in MUTATED: fails when fewer
    than MUTATION_THRESHOLD % of the mutants are killed. Not a default session."""
    # Every mutant runs pytest in a fresh process that writes no bytecode: compiled once
    # here, the dependencies load fast.
    session.env["UV_COMPILE_BYTECODE"] = "1"
    install(session, "mutation")
    args = ["--plan", json.dumps(MUTATED), f"--threshold={MUTATION_THRESHOLD:g}"]
    session.run("python", "-m", "ci.mutation", *args)


# Static checks ------------------------------------------------------------------------------


@nox.session(python=NEWEST)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check; GitHub workflows against their schema, actionlint (which
    knows the actions' runtimes) and zizmor; the layer contracts (import-linter)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)
    workflows = sorted(str(path.relative_to(ROOT)) for path in ROOT.glob(f"{WORKFLOWS}/*.yml"))
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    session.run("actionlint", *workflows)
    session.run("zizmor", "--offline", WORKFLOWS)
    session.run("lint-imports", "--no-logo", "--no-cache", env={"PYTHONPATH": "src"})


@nox.session(python=OLDEST)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/devstream, tests, noxfile.py and ci/ (files in pyproject.toml)."""
    install(session, "typecheck")
    session.run("mypy", *session.posargs)
