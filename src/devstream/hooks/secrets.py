"""Secret-looking lines removed before anything a hook captures is stored.

detect-secrets (Yelp's maintained detector set: cloud keys, tokens, private keys, passwords
in assignments and URLs, high-entropy strings) scans the text as a file would be scanned;
every line it flags is replaced, so the rest of the capture stays useful. It flags a private
key by its BEGIN line alone: the key's body goes with it, up to its END line (or the end of
the text, if that was cut off).

A hook scans in a child process (`python -m devstream.hooks.secrets`, the text on its
stdin) started before it opens its store: loading detect-secrets then takes place on another
core while the hook loads its storage stack, instead of after it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devstream.errors import ScanFailed

REDACTED = "[line removed: it looked like a secret]"
SCAN_TIMEOUT_S = 60.0  # generous: a loaded machine takes seconds to start an interpreter
SCANNER = [sys.executable, "-m", __name__]  # reads the text on stdin, writes it scanned
# A PEM block's armour lines: "-----BEGIN RSA PRIVATE KEY-----", "-----END PGP PRIVATE KEY
# BLOCK-----" and the like, anywhere in a line (a key may sit in a string literal).
_KEY_BEGINS = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")
_KEY_ENDS = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")


class Scan:
    """A scan of one text, running in a child process from construction on; leaving its
    `with` block ends the child if its result was never asked for."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._child = subprocess.Popen(
            SCANNER,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
        )

    def result(self) -> str:
        """The text with every flagged line replaced (waits for the child)."""
        try:
            out, err = self._child.communicate(self._text, timeout=SCAN_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self._end()
            raise ScanFailed(f"the secret scan took over {SCAN_TIMEOUT_S:g} s") from exc
        if self._child.returncode != 0:
            last = err.strip().splitlines()[-1:] or [f"exit code {self._child.returncode}"]
            raise ScanFailed(f"the secret scan failed: {last[0]}")
        return out

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *_: object) -> None:
        if self._child.poll() is None:
            self._end()

    def _end(self) -> None:
        self._child.kill()
        self._child.communicate()  # reaped, its pipes closed


def redacted(text: str) -> str:
    """`text` with every line detect-secrets flags replaced by REDACTED."""
    from detect_secrets.core.secrets_collection import SecretsCollection  # noqa: PLC0415
    from detect_secrets.settings import default_settings  # noqa: PLC0415

    # Its scanner reads files: the text goes to a private folder (mode 0700), gone after.
    folder = Path(tempfile.mkdtemp(prefix="devstream-scan-"))
    try:
        scanned = folder / "capture.txt"
        scanned.write_text(text, encoding="utf-8")
        with default_settings():
            found = SecretsCollection()
            found.scan_file(str(scanned))
        flagged = {secret.line_number for _, secret in found}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not flagged:
        return text
    lines = text.split("\n")
    removed = _with_key_bodies(flagged, lines)
    return "\n".join(REDACTED if n in removed else line for n, line in enumerate(lines, start=1))


def _with_key_bodies(flagged: set[int], lines: list[str]) -> set[int]:
    """The flagged line numbers (from 1), and after each that begins a private key the
    lines of its body, through its END line or to the end of the text."""
    removed = set(flagged)
    for start in sorted(flagged):
        if not _KEY_BEGINS.search(lines[start - 1]):
            continue
        for n in range(start + 1, len(lines) + 1):
            removed.add(n)
            if _KEY_ENDS.search(lines[n - 1]):
                break
    return removed


def _scan_stdin() -> None:
    """The child's side: load the detectors while the text is on its way, then scan it."""
    import detect_secrets.core.secrets_collection  # noqa: F401, PLC0415

    sys.stdout.write(redacted(sys.stdin.read()))


if __name__ == "__main__":
    _scan_stdin()
