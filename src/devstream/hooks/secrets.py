"""Secret-looking lines removed before anything a hook captures is stored.

detect-secrets (Yelp's maintained detector set: cloud keys, tokens, private keys, passwords
in assignments and URLs, high-entropy strings) scans the text as a file would be scanned;
every line it flags is replaced, so the rest of the capture stays useful.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

REDACTED = "[line removed: it looked like a secret]"


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
    return "\n".join(REDACTED if n in flagged else line for n, line in enumerate(lines, start=1))
