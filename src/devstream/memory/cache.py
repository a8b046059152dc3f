"""The index cache: a rebuildable copy of the in-process indexes in one file beside the store.

`<database>-index` holds the rows, their unit vectors and FTS5's postings as flat arrays,
with the committed store state they match, the embedding model and dimension, and a format
version. A fresh process maps the big arrays instead of rebuilding, then catches up with
what changed since. The database stays the only source of truth: a cache that is missing,
of another format, model or dimension, cut short or failing its checksums is ignored (and
rewritten after the next rebuild); one whose state the store no longer continues from is
never applied. It is written to a temporary file and renamed into place, so a reader sees
an old cache or a new one, never half of one; where the folder is read-only none is written.
Deleting it is always safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from devstream.memory.index import IndexState, MemoryIndex, with_base
from devstream.memory.lexical import BasePostings
from devstream.memory.rows import COLUMNS, Rows

FORMAT = 1
MAGIC = b"DSINDEX\x00"
_ALIGN = 64
_POSTINGS = ("terms", "term_bounds", "starts", "rows", "counts")


def path_for(database: Path) -> Path:
    return database.with_name(database.name + "-index")


def save(path: Path, index: MemoryIndex) -> bool:
    """Write the index (every row live, no appended rows: just rebuilt); False if the
    folder cannot take it."""
    arrays = _arrays(index)
    header: dict[str, Any] = {
        "format": FORMAT,
        "model": index.vectors.model,
        "dimension": index.vectors.dimension,
        "state": None if index.state is None else vars(index.state),
        "rows": index.rows.size,
        "arrays": {},
    }
    offset = 0
    for name, array in arrays.items():
        offset = -(-offset // _ALIGN) * _ALIGN
        header["arrays"][name] = {
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "offset": offset,
            "crc32": _crc32(array),
        }
        offset += array.nbytes
    encoded = json.dumps(header).encode()
    start = -(-(len(MAGIC) + 8 + len(encoded)) // _ALIGN) * _ALIGN
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    except OSError:
        return False
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(MAGIC + len(encoded).to_bytes(8, "little") + encoded)
            for name, array in arrays.items():
                out.seek(start + header["arrays"][name]["offset"])
                out.write(_bytes(array))
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return False
    return True


def load(path: Path, model: str, dimension: int) -> MemoryIndex | None:
    """The cached index, or None when there is none this model and dimension can trust."""
    try:
        with path.open("rb") as source:
            head = source.read(len(MAGIC) + 8)
            if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
                return None
            size = int.from_bytes(head[len(MAGIC) :], "little")
            header = json.loads(source.read(size))
        start = -(-(len(MAGIC) + 8 + size) // _ALIGN) * _ALIGN
        if (header.get("format"), header.get("model"), header.get("dimension")) != (
            FORMAT,
            model,
            dimension,
        ) or header.get("state") is None:
            return None
        arrays = {name: _mapped(path, start, spec) for name, spec in header["arrays"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if arrays.keys() != {*COLUMNS, "vectors", *_POSTINGS} or any(
        _crc32(array) != header["arrays"][name]["crc32"] for name, array in arrays.items()
    ):
        return None
    rows = Rows.loaded({name: np.array(arrays[name]) for name in COLUMNS})
    postings = BasePostings(**{name: arrays[name] for name in _POSTINGS})
    state = IndexState(**header["state"])
    return with_base(
        model, dimension, rows=rows, vectors=arrays["vectors"], postings=postings, state=state
    )


def _arrays(index: MemoryIndex) -> dict[str, npt.NDArray[Any]]:
    size = index.rows.size
    base = index.text.base
    found: dict[str, npt.NDArray[Any]] = {
        name: array[:size] for name, array in index.rows.arrays.items()
    }
    found["vectors"] = index.vectors.matrix(size)
    found.update({name: getattr(base, name) for name in _POSTINGS})
    return found


def _mapped(path: Path, start: int, spec: dict[str, Any]) -> npt.NDArray[Any]:
    shape = tuple(spec["shape"])
    dtype = np.dtype(spec["dtype"])
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start + spec["offset"], shape=shape)


def _bytes(array: npt.NDArray[Any]) -> memoryview:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def _crc32(array: npt.NDArray[Any]) -> int:
    return zlib.crc32(_bytes(array))
