"""Print the GitHub Actions job matrix for the nox sessions: one job per session.

    python ci/gha_matrix.py                                        # all but those EXCLUDED
    nox --list --json -t uvloop | python ci/gha_matrix.py --stdin  # the sessions nox selected

The output is one line of JSON, {"include": [{"session": ..., "python": ..., "id": ...}]},
for `strategy.matrix: ${{ fromJSON(...) }}`. `coverage` gets no entry: it combines the data
of all the other jobs, so the workflow runs it in a job of its own afterwards. Nor does
`benchmark`: it has a job of its own that does not gate merging. `flaky` and `mutation` run
for an hour or more and are run by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

EXCLUDED = ("coverage", "benchmark", "flaky", "mutation")
# A keyword expression lifts nox's default selection, so every other session is listed.
NOX_LIST = ["nox", "--list", "--json", "--keywords", " and ".join(f"not {n}" for n in EXCLUDED)]
# For a session that runs on the interpreter nox runs on: the latest Python 3.
ANY_PYTHON = "3.x"


def matrix(sessions: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Turn the entries of `nox --list --json` into a matrix of jobs."""
    include = [
        {
            "session": entry["session"],
            "python": str(entry["python"] or ANY_PYTHON),
            # Usable in artifact names: letters, digits and dashes only.
            "id": re.sub(r"[^A-Za-z0-9]+", "-", entry["session"]).strip("-"),
        }
        for entry in sessions
        if entry["name"] not in EXCLUDED
    ]
    return {"include": include}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the GitHub Actions job matrix.")
    parser.add_argument(
        "--stdin", action="store_true", help="read `nox --list --json` from standard input"
    )
    args = parser.parse_args(argv)
    listing = (
        sys.stdin.read()
        if args.stdin
        else subprocess.run(NOX_LIST, check=True, stdout=subprocess.PIPE, text=True).stdout
    )
    print(json.dumps(matrix(json.loads(listing)), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
