"""Secret-looking lines removed before anything a hook captures is stored.

detect-secrets (Yelp's maintained detector set: cloud keys, tokens, private keys, passwords
in assignments and URLs, high-entropy strings) scans the text as a file would be scanned;
every line it flags is replaced, so the rest of the capture stays useful. Private keys are
also found by their armour lines, as detect-secrets flags a key's BEGIN line alone, and not
every kind (PKCS#8 encrypted keys): a key goes whole, from its BEGIN line through its END
line (or to the end of the text, if that was cut off).

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
# A key's armour lines: "-----BEGIN RSA PRIVATE KEY-----", "-----END PGP PRIVATE KEY
# BLOCK-----", "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----" and the like, anywhere in a line
# (a key may sit in a string literal, or whole on one line with escaped newlines).
_KEY_BEGINS = re.compile(r"-{4,5} ?BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*?-{4,5}")
_KEY_ENDS = re.compile(r"-{4,5} ?END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*?-{4,5}")
# The text is scanned as each of these files. detect-secrets picks its password patterns by
# a file's type: in plain text it wants the value quoted (`password = "…"`), in a config
# file it also takes it bare, as shells, env files and tools' output write it
# (`PGPASSWORD=…`, `password: …`).
_SCANNED_AS = ("capture.txt", "capture.cfg")
# Credentials on a command line that detect-secrets does not flag: curl's `-u user:pass`,
# the value of a `--password` flag (`--db-password` too), MySQL's `-pPASS`, a registry
# login's `-p`, sshpass's and redis-cli's, an Authorization header, an npm token.
_COMMAND_SECRETS = re.compile(
    r"\bcurl\b.*\s(?:-u|--user)(?:=|\s*)\S+:\S"
    r"|--[\w-]*pass(?:word|wd|phrase)?(?:=|\s+(?!-))\S"
    r"|\b(?:mysql|mysqldump|mariadb|mysqladmin)\b.*\s-p\S"
    r"|\b(?:docker|podman|helm|buildah|skopeo)\b.*\blogin\b.*\s-p\s*\S"
    r"|\bsshpass\s+-p\s*\S|\bredis-cli\b.*\s-a\s+\S"
    r"|\bAuthorization:\s*(?:Bearer|Basic|Token)\s+\S"
    r"|\bnpm_[A-Za-z0-9]{36}\b"
)
# Where a line ends for a file read with universal newlines (a lone "\r" too).
_LINE_ENDS = re.compile("(\r\n|\r|\n)")


class Scan:
    """A scan of one text, running in a child process from construction on; leaving its
    `with` block ends the child if its result was never asked for."""

    def __init__(self, text: str) -> None:
        self._text = text
        # Bytes both ways: a text pipe would turn each "\r" (progress output) into "\n".
        self._child = subprocess.Popen(
            SCANNER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def result(self) -> str:
        """The text with every flagged line replaced (waits for the child)."""
        try:
            out, err = self._child.communicate(self._text.encode(), timeout=SCAN_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self._end()
            raise ScanFailed(f"the secret scan took over {SCAN_TIMEOUT_S:g} s") from exc
        if self._child.returncode != 0:
            said = err.decode(errors="replace").strip().splitlines()[-1:]
            raise ScanFailed(
                f"the secret scan failed: {said[0] if said else self._child.returncode}"
            )
        return out.decode()

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
        found = SecretsCollection()
        with default_settings():
            for name in _SCANNED_AS:
                scanned = folder / name
                scanned.write_text(text, encoding="utf-8", newline="")
                found.scan_file(str(scanned))
        flagged = {secret.line_number for _, secret in found}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # Lines as detect-secrets numbers them: it reads the file with universal newlines.
    parts = _LINE_ENDS.split(text)
    lines, ends = parts[0::2], [*parts[1::2], ""]
    removed = flagged | _key_lines(lines)
    removed |= {n for n, line in enumerate(lines, start=1) if _COMMAND_SECRETS.search(line)}
    if not removed:
        return text
    kept = (REDACTED if n in removed else line for n, line in enumerate(lines, start=1))
    return "".join(line + end for line, end in zip(kept, ends, strict=True))


def _key_lines(lines: list[str]) -> set[int]:
    """The numbers (from 1) of the lines that hold a private key: its BEGIN line through
    its END line (one line, when the key ends where it begins), or to the end of the text."""
    found: set[int] = set()
    inside = False
    for n, line in enumerate(lines, start=1):
        if inside:
            found.add(n)
            inside = not _KEY_ENDS.search(line)
        elif begins := _KEY_BEGINS.search(line):
            found.add(n)
            inside = not _KEY_ENDS.search(line, begins.end())
    return found


def _scan_stdin() -> None:
    """The child's side: load the detectors while the text is on its way, then scan it."""
    import detect_secrets.core.secrets_collection  # noqa: F401, PLC0415

    sys.stdout.buffer.write(redacted(sys.stdin.buffer.read().decode()).encode())


if __name__ == "__main__":
    _scan_stdin()
