"""The index cache: a rebuildable copy of the in-process indexes in one file beside the store.

`<database>-index` holds the rows, their unit vectors and int8 codes (by column too when
sparse) and FTS5's postings as flat arrays, with the committed store state they match, the
embedding model and dimension, and a format version. A fresh process maps the big arrays
instead of rebuilding, then catches up with what changed since. The database stays the only
source of truth: a cache that is missing, of another format, model or dimension, cut short
or failing its checksums is ignored (and rewritten after the next rebuild); one whose state
the store no longer continues from is never applied. It is written to a temporary file and
renamed into place, so a reader sees an old cache or a new one, never half of one; where
the folder is read-only none is written. Deleting it is always safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from devstream.memory.index import IndexState, MemoryIndex, with_base
from devstream.memory.lexical import BasePostings
from devstream.memory.rows import COLUMNS, Rows

FORMAT = 3
MAGIC = b"DSINDEX\x00"
_ALIGN = 64
_POSTINGS = ("terms", "term_bounds", "starts", "rows", "counts")
_NAMES = {*COLUMNS, "vectors", "codes", "columns", *_POSTINGS}
_CHUNK = 1 << 22


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
        offset = _aligned(offset)
        header["arrays"][name] = {
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "offset": offset,
            "crc32": _crc32(array),
        }
        offset += array.nbytes
    encoded = json.dumps(header).encode()
    start = _aligned(len(MAGIC) + 8 + len(encoded))
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
            header, start = _header(source)
            specs = header["arrays"]
            wanted = (FORMAT, model, dimension)
            if (header["format"], header["model"], header["dimension"]) != wanted or (
                header["state"] is None or specs.keys() != _NAMES
            ):
                return None
            if not all(_intact(source, start, spec) for spec in specs.values()):
                return None
        arrays = {name: _mapped(path, start, spec) for name, spec in specs.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    rows = Rows.loaded({name: np.array(arrays[name]) for name in COLUMNS})
    postings = BasePostings(**{name: arrays[name] for name in _POSTINGS})
    state = IndexState(**header["state"])
    return with_base(
        model,
        dimension,
        rows=rows,
        vectors=arrays["vectors"],
        codes=arrays["codes"],
        columns=arrays["columns"] if arrays["columns"].size else None,
        postings=postings,
        state=state,
    )


def _header(source: BinaryIO) -> tuple[dict[str, Any], int]:
    """The header, and where the arrays start; ValueError if this is no index cache."""
    head = source.read(len(MAGIC) + 8)
    if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
        raise ValueError("not an index cache")
    size = int.from_bytes(head[len(MAGIC) :], "little")
    header: dict[str, Any] = json.loads(source.read(size))
    return header, _aligned(len(MAGIC) + 8 + size)


def _intact(source: BinaryIO, start: int, spec: dict[str, Any]) -> bool:
    """Whether an array's bytes are all there and match their checksum. Read, not mapped:
    pages read stay out of this process's resident memory until a search needs them."""
    remaining = int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
    source.seek(start + spec["offset"])
    crc = 0
    while remaining > 0:
        chunk = source.read(min(remaining, _CHUNK))
        if not chunk:
            return False
        crc, remaining = zlib.crc32(chunk, crc), remaining - len(chunk)
    return bool(crc == spec["crc32"])


def _arrays(index: MemoryIndex) -> dict[str, npt.NDArray[Any]]:
    size = index.rows.size
    base = index.text.base
    found: dict[str, npt.NDArray[Any]] = {
        name: array[:size] for name, array in index.rows.arrays.items()
    }
    found["vectors"] = index.vectors.matrix(size)
    found["codes"] = index.vectors.codes(size)
    columns = index.vectors.columns(size)
    found["columns"] = np.zeros((0, 0), np.int8) if columns is None else columns
    found.update({name: getattr(base, name) for name in _POSTINGS})
    return found


def _mapped(path: Path, start: int, spec: dict[str, Any]) -> npt.NDArray[Any]:
    shape = tuple(spec["shape"])
    dtype = np.dtype(spec["dtype"])
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    mapped = np.memmap(path, dtype=dtype, mode="r", offset=start + spec["offset"], shape=shape)
    # A plain view of the mapping: slicing a memmap builds a memmap each time, at a cost.
    return np.asarray(mapped)


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _bytes(array: npt.NDArray[Any]) -> memoryview:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def _crc32(array: npt.NDArray[Any]) -> int:
    return zlib.crc32(_bytes(array))
