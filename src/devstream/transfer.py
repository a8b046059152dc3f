"""Export a store to JSON Lines and import such a file into another store.

An export is one header line (`format`, `version`, the schema revision, an `export_id`,
whether vectors are included), then one line per row: plans, phases, tasks, dependencies,
task events, memories and context injections, each kind in id order, every line
`{"kind": ..., <its columns>}`, then an end line, `{"kind": "end", "rows": {kind: count}}`,
so that a file cut short is refused (format version 1 had no end line, and is still read).
It is read from one snapshot, so it is consistent.
Timestamps are ISO 8601 in UTC; vectors (with `--with-embeddings`) are base64 of their
little-endian float32 bytes. Without vectors, imported memories wait to be embedded.

An import first reads the whole file and checks every line (kinds, fields, each value
against its column's rules, that each link names a row the export holds before it, that no
id, phase position or dependency comes twice, and that a dependency stays within its plan),
so bad input writes nothing. It then writes in transactions of `batch` lines through the
pool's one write path. Rows get new ids here; links follow them. A memory whose content
hash and links match one already here is not written again: it maps onto that one. Each
transaction also records, in the import ledger, which rows of this export it wrote, so an
import that was killed resumes where it stopped when run again and adds nothing twice.
"""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from sqlalchemy import LargeBinary, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.app import DevStream
from devstream.db import memory_store, revision
from devstream.db import transfer as store
from devstream.db.task_store import Places
from devstream.db.transfer import EMBEDDING_COLUMNS, TABLES
from devstream.db.types import UTCDateTime
from devstream.errors import BadExport, DevStreamError, ExportTooNew, InvalidInput
from devstream.tasks.graph import find_cycle
from devstream.transfer_fields import check_fields

FORMAT = "devstream-export"
VERSION = 2
END = "end"  # the kind of an export's last line, which counts the rows of each kind
_ENDED_FROM = 2  # the first format version with an end line
BATCH = 1_000  # lines per import transaction
_PAGE = 2_000  # rows per read while exporting
# Where each kind's links point: column -> kind.
_LINKS: dict[str, dict[str, str]] = {
    "plan": {},
    "phase": {"plan_id": "plan"},
    "task": {"phase_id": "phase"},
    "dependency": {"task_id": "task", "depends_on_id": "task"},
    "task_event": {"task_id": "task"},
    "memory": {"plan_id": "plan", "phase_id": "phase", "task_id": "task"},
    "context_injection": {"task_id": "task"},
}
Progress = Callable[[int, int], None]  # (lines imported, lines in all)


@dataclass(frozen=True)
class ExportReport:
    export_id: str
    rows: dict[str, int]


@dataclass
class ImportReport:
    export_id: str
    dry_run: bool
    added: Counter[str] = field(default_factory=Counter)  # rows written, by kind
    matched: int = 0  # memories already here (same hash and links): not written again
    resumed: int = 0  # lines an earlier run of this import had already written


# --- export ------------------------------------------------------------------------


async def export(ds: DevStream, out: IO[str], *, embeddings: bool = False) -> ExportReport:
    """Write the whole store to `out` as JSON Lines, from one snapshot."""
    export_id = str(uuid.uuid4())
    rows: Counter[str] = Counter()
    async with ds.pool.read_transaction() as conn:
        header = {
            "format": FORMAT,
            "version": VERSION,
            "schema": revision.HEAD,
            "export_id": export_id,
            "exported_at": _timestamp(datetime.now(timezone.utc)),
            "embeddings": embeddings,
        }
        out.write(_line(header))
        memories: set[int] = set()
        for kind in TABLES:
            async for row in _rows(conn, kind, embeddings=embeddings):
                if kind == "memory":
                    memories.add(row["id"])
                elif kind == "context_injection":
                    # Injections may name memories deleted since: only those kept travel.
                    named = json.loads(row["memory_ids"])
                    row["memory_ids"] = [i for i in named if i in memories]
                out.write(_line({"kind": kind, **_encoded(row)}))
                rows[kind] += 1
    out.write(_line(end_line(rows)))
    return ExportReport(export_id, dict(rows))


def end_line(rows: Mapping[str, int]) -> dict[str, Any]:
    """An export's last line: how many rows of each kind it holds."""
    return {"kind": END, "rows": {kind: rows.get(kind, 0) for kind in TABLES}}


async def _rows(
    conn: AsyncConnection, kind: str, *, embeddings: bool
) -> AsyncIterator[dict[str, Any]]:
    after = None
    while rows := await store.rows_after(conn, kind, after, _PAGE, embeddings=embeddings):
        for row in rows:
            yield row
        after = store.key_of(kind, rows[-1])


# Valid raw in JSON, yet a line break to many line readers (Python's `str.splitlines`
# among them): escaped, every record stays one line for any reader.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _line(record: dict[str, Any]) -> str:
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return (text if text.isascii() else text.translate(_LINE_BREAKS)) + "\n"


def _encoded(row: dict[str, Any]) -> dict[str, Any]:
    return {name: _value(value) for name, value in row.items()}


def _value(value: object) -> object:
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


# --- import ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedExport:
    """An export whose every line passed the checks, ready to import."""

    header: dict[str, Any]
    rows: int
    lines: IO[str]  # from the line after the header


@contextlib.contextmanager
def checked(source: IO[str]) -> Iterator[CheckedExport]:
    """Read and check every line of `source` (BadExport or ExportTooNew, naming the line,
    before any store is touched); a file is read again to import it, anything else (stdin)
    from a private copy made while checking."""
    if source.seekable():
        start = source.tell()
        header, rows = _checked(source, None)
        source.seek(start)
        source.readline()  # the header
        yield CheckedExport(header, rows, source)
        return
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        header, rows = _checked(source, spool)
        spool.seek(0)
        spool.readline()
        yield CheckedExport(header, rows, spool)


async def import_(
    ds: DevStream,
    source: IO[str],
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    progress: Progress | None = None,
) -> ImportReport:
    """Import an export read from `source`; with `dry_run`, only say what it would add."""
    with checked(source) as export:
        return await import_checked(ds, export, dry_run=dry_run, batch=batch, progress=progress)


async def import_checked(
    ds: DevStream,
    export: CheckedExport,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    progress: Progress | None = None,
) -> ImportReport:
    """Import an export `checked` has passed; with `dry_run`, only say what it would add."""
    lines, total = export.lines, export.rows
    report = ImportReport(str(export.header["export_id"]), dry_run)
    async with ds.pool.read_transaction() as conn:
        run = _Import(report, await store.imported(conn, report.export_id))
        if dry_run:
            await run.lines(conn, _records(lines))
            return report
    done = 0
    for chunk in _chunks(_records(lines), batch):
        try:
            async with ds.pool.write_transaction() as conn:
                await run.lines(conn, chunk)
        except DevStreamError as exc:
            if done:  # earlier transactions stand: say so, and that a rerun resumes
                stands = (
                    f"the export's lines up to {done + 1} were imported before it (the header "
                    "is line 1); running the same import again resumes after them"
                )
                exc.hint = f"{exc.hint}; {stands}" if exc.hint else stands
            raise
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    async with ds.pool.write_transaction() as conn:
        await store.refresh_statistics(conn)
    return report


def _checked(source: IO[str], spool: IO[str] | None) -> tuple[dict[str, Any], int]:
    """Read every line, check it (and copy it to `spool`): the header and the row count."""
    seen: dict[str, set[int]] = {kind: set() for kind in TABLES}
    counted: Counter[str] = Counter()
    constraints = _Constraints()
    edges: list[tuple[int, int]] = []
    header: dict[str, Any] | None = None
    ended = False
    number = 0
    for number, text in enumerate(_decoded(source), start=1):
        record = _parsed(number, text)
        if ended:
            raise BadExport(number, "a line after the end line")
        if header is None:
            header = _checked_header(number, record)
        elif record.get("kind") == END and header["version"] >= _ENDED_FROM:
            _check_end(number, record, counted)
            ended = True
        else:
            _check_record(number, record, seen)
            counted[record["kind"]] += 1
            constraints.check(number, record)
            if record["kind"] == "dependency":
                edges.append((record["task_id"], record["depends_on_id"]))
        if spool is not None:
            spool.write(text if text.endswith("\n") else text + "\n")
    if header is None:
        raise BadExport(1, "the file is empty: an export starts with its header line")
    if header["version"] >= _ENDED_FROM and not ended:
        raise BadExport(number + 1, "the export stops before its end line: it was cut short")
    cycle = find_cycle(edges)
    if cycle:
        raise BadExport(number, f"the dependencies among tasks {cycle} form a cycle")
    return header, counted.total()


def _decoded(source: IO[str]) -> Iterator[str]:
    """The source's lines, refusing text that is not UTF-8: a line that holds bytes a
    source opened with errors="surrogateescape" (as the CLI opens it) could not decode, or
    a strict source's decoding error (which comes a buffer ahead: the line is a bound)."""
    number = 0
    try:
        for number, text in enumerate(source, start=1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadExport(number, "not UTF-8 text") from exc
            yield text
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text ({exc.reason}), here or in a line after it"
        raise BadExport(number + 1, problem) from exc


@dataclass
class _Constraints:
    """What the unique constraints and the plan rules need to know of the lines so far."""

    places: Places = field(default_factory=lambda: Places(set(), {}, {}))
    positions: set[tuple[int, int]] = field(default_factory=set)  # (plan, phase position)
    dependencies: set[tuple[int, int]] = field(default_factory=set)

    def check(self, number: int, record: dict[str, Any]) -> None:
        """Refuse what the store would refuse halfway through writing (a second phase at a
        position, a second dependency) and what the services refuse (a dependency across
        plans, a memory whose links disagree)."""
        kind, places = record["kind"], self.places
        if kind == "plan":
            places.plans.add(record["id"])
        elif kind == "phase":
            places.phases[record["id"]] = record["plan_id"]
            at = (record["plan_id"], record["position"])
            _once(number, self.positions, at, f"a second phase at position {at[1]} of plan {at[0]}")
        elif kind == "task":
            places.tasks[record["id"]] = (record["phase_id"], places.phases[record["phase_id"]])
        elif kind == "dependency":
            self._check_dependency(number, record["task_id"], record["depends_on_id"])
        elif kind == "memory":
            try:
                places.check(record.get("plan_id"), record.get("phase_id"), record.get("task_id"))
            except InvalidInput as exc:
                raise BadExport(number, f"a memory line: {exc.args[0]}") from exc

    def _check_dependency(self, number: int, task: int, prerequisite: int) -> None:
        edge = (task, prerequisite)
        _once(number, self.dependencies, edge, f"a second dependency of {task} on {prerequisite}")
        plan, other = self.places.tasks[task][1], self.places.tasks[prerequisite][1]
        if plan != other:
            problem = f"task {task} (plan {plan}) depends on task {prerequisite} of plan {other}"
            raise BadExport(number, f"{problem}: a dependency stays within its plan")


def _once(number: int, seen: set[Any], key: object, problem: str) -> None:
    if key in seen:
        raise BadExport(number, problem)
    seen.add(key)


def _parsed(number: int, text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadExport(number, f"not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise BadExport(number, "a line must be a JSON object")
    return record


def _checked_header(number: int, record: dict[str, Any]) -> dict[str, Any]:
    if record.get("format") != FORMAT:
        raise BadExport(number, f"no {FORMAT} header: is this a DevStream export?")
    version = record.get("version")
    if not isinstance(version, int) or version < 1:
        raise BadExport(number, f"the format version must be a positive integer, not {version!r}")
    if version > VERSION:
        raise ExportTooNew(
            f"the export is in format version {version}; this DevStream reads up to {VERSION}"
        )
    if not isinstance(record.get("export_id"), str) or not record["export_id"]:
        raise BadExport(number, "the header has no export_id")
    return record


def _check_end(number: int, record: dict[str, Any], counted: Counter[str]) -> None:
    """The end line counts as many rows of each kind as the lines before it hold."""
    rows = record.get("rows")
    counts = rows if isinstance(rows, dict) and set(record) == {"kind", "rows"} else {}
    if set(counts) != set(TABLES) or not all(type(n) is int for n in counts.values()):
        raise BadExport(number, 'the end line must be {"kind": "end", "rows": {kind: count}}')
    for kind, count in counts.items():
        if count != counted[kind]:
            problem = f"the end line counts {count} {kind} lines; the export holds {counted[kind]}"
            raise BadExport(number, problem)


def _check_record(number: int, record: dict[str, Any], seen: dict[str, set[int]]) -> None:
    kind = record.get("kind")
    if kind not in TABLES:
        raise BadExport(number, f"unknown kind {kind!r}; the kinds are {', '.join(TABLES)}")
    missing = sorted(name for name in _REQUIRED[kind] if record.get(name) is None)
    unknown = sorted(record.keys() - _FIELDS[kind])
    if missing or unknown:
        problem = f"no {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
        raise BadExport(number, f"a {kind} line has {problem}")
    try:
        check_fields(kind, record)
    except InvalidInput as exc:
        raise BadExport(number, f"a {kind} line: {exc.args[0]}") from exc
    for column, target in _LINKS[kind].items():
        linked = record.get(column)
        if linked is not None and linked not in seen[target]:
            raise BadExport(number, f"{kind} names {target} {linked!r}, which no line before holds")
    if kind == "context_injection" and not set(record["memory_ids"]) <= seen["memory"]:
        raise BadExport(number, "a context injection names memories no line before holds")
    if kind == "memory" and record["content_hash"] != memory_store.content_hash(record["content"]):
        raise BadExport(number, "a memory's content_hash is not the hash of its content")
    if "id" in record:
        _once(number, seen[kind], record["id"], f"a second {kind} with id {record['id']}")


def _records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The rows of lines checked whole, up to the end line."""
    for text in lines:
        record = json.loads(text)
        if record.get("kind") == END:
            return
        yield record


def _chunks(records: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Import:
    """An import's id maps (source id -> id here, by kind, the ledger's to begin with), and
    the writing of its lines, a transaction's worth at a time."""

    def __init__(self, report: ImportReport, maps: dict[str, dict[int, int]]) -> None:
        self._report = report
        self._maps: dict[str, dict[int, int]] = {kind: dict(maps.get(kind, {})) for kind in TABLES}
        # Memories this run wrote (or, in a dry run, would have), by content hash and links:
        # a later line with the same ones maps onto it.
        self._memories: dict[tuple[object, ...], int] = {}

    async def lines(self, conn: AsyncConnection, records: Iterable[dict[str, Any]]) -> None:
        by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in TABLES}
        for record in records:
            by_kind[record["kind"]].append(record)
        for kind, rows in by_kind.items():
            if not rows:
                continue
            if kind == "dependency":
                await self._dependencies(conn, rows)
            else:
                await self._rows(conn, kind, rows)

    async def _rows(self, conn: AsyncConnection, kind: str, rows: list[dict[str, Any]]) -> None:
        known, report = self._maps[kind], self._report
        fresh = [self._linked(kind, row) for row in rows if row["id"] not in known]
        report.resumed += len(rows) - len(fresh)
        repeats: dict[int, int] = {}
        if kind == "memory":
            fresh, repeats = await self._unmatched(conn, fresh)
        # A dry run maps onto placeholders: it takes no id from a sequence.
        ids = (
            range(-1, -len(fresh) - 1, -1)
            if report.dry_run
            else await store.new_ids(conn, kind, len(fresh))
        )
        mapped = {row["id"]: new for row, new in zip(fresh, ids, strict=True)}
        writes = [{**row, "id": mapped[row["id"]]} for row in fresh]
        mapped.update({repeat: mapped[first] for repeat, first in repeats.items()})
        if not report.dry_run:
            await store.write(conn, kind, writes)
            await store.remember(conn, report.export_id, kind, mapped)
        known.update(mapped)
        if kind == "memory":
            self._memories.update({_memory_key(row): mapped[row["id"]] for row in fresh})
        report.added[kind] += len(fresh)
        report.matched += len(repeats)

    def _linked(self, kind: str, row: dict[str, Any]) -> dict[str, Any]:
        """The row as it is written here: links to the ids their rows got, values typed."""
        values = {name: value for name, value in row.items() if name != "kind"}
        for name, decode in _DECODERS[kind].items():
            if values.get(name) is not None:
                values[name] = decode(values[name])
        for column, target in _LINKS[kind].items():
            if row.get(column) is not None:
                values[column] = self._maps[target][int(row[column])]
        if kind == "context_injection":
            memories = self._maps["memory"]
            values["memory_ids"] = json.dumps([memories[int(i)] for i in row["memory_ids"]])
        return values

    async def _unmatched(
        self, conn: AsyncConnection, rows: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """The memories not here yet, and the repeats among them (source id -> the source id
        of the first with the same content and links, written in its place); the others
        map onto the entries that are here. (A dry run writes nothing, so what it would have
        written in earlier transactions is looked up among this run's own.)"""
        hashes = sorted({row["content_hash"] for row in rows})
        entries = await memory_store.by_hashes(conn, hashes)
        here = {_memory_key(vars(entry)): entry.id for entry in entries}
        fresh: list[dict[str, Any]] = []
        firsts: dict[tuple[object, ...], int] = {}
        repeats: dict[int, int] = {}
        matched: dict[int, int] = {}
        for row in rows:
            key = _memory_key(row)
            target = self._memories.get(key, here.get(key))
            if target is not None:
                matched[row["id"]] = target
            elif key in firsts:
                repeats[row["id"]] = firsts[key]
            else:
                firsts[key] = row["id"]
                fresh.append(row)
        if not self._report.dry_run:
            await store.remember(conn, self._report.export_id, "memory", matched)
        self._maps["memory"].update(matched)
        self._report.matched += len(matched)
        return fresh, repeats

    async def _dependencies(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Edges between the tasks' new ids; those an earlier run wrote are there already."""
        edges = [self._linked("dependency", row) for row in rows]
        there = await store.existing_dependencies(
            conn, [(edge["task_id"], edge["depends_on_id"]) for edge in edges]
        )
        fresh = [edge for edge in edges if (edge["task_id"], edge["depends_on_id"]) not in there]
        self._report.resumed += len(edges) - len(fresh)
        if not self._report.dry_run:
            await store.write(conn, "dependency", fresh)
        self._report.added["dependency"] += len(fresh)


def _memory_key(row: dict[str, Any]) -> tuple[object, ...]:
    return (row["content_hash"], row.get("plan_id"), row.get("phase_id"), row.get("task_id"))


def _decoders(table: Table) -> dict[str, Callable[[Any], object]]:
    """How the columns that JSON cannot hold as they are come back from their text."""
    found: dict[str, Callable[[Any], object]] = {}
    for column in table.columns:
        if isinstance(column.type, UTCDateTime):
            found[column.name] = datetime.fromisoformat
        elif isinstance(column.type, LargeBinary):
            found[column.name] = base64.b64decode
    return found


_FIELDS = {
    kind: {column.name for column in table.columns} | {"kind"} for kind, table in TABLES.items()
}
_REQUIRED = {
    kind: [c.name for c in table.columns if not c.nullable and c.name not in EMBEDDING_COLUMNS]
    for kind, table in TABLES.items()
}
_DECODERS = {kind: _decoders(table) for kind, table in TABLES.items()}
