"""The one error hierarchy DevStream raises: each says what went wrong and what to do."""

from __future__ import annotations


class DevStreamError(Exception):
    """Base of every error DevStream raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        """What went wrong, without the hint."""
        return super().__str__()

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(DevStreamError):
    """A setting is missing, malformed or contradictory."""

    hint = "check the config file, DEVSTREAM_* variables and flags"


class InvalidInput(DevStreamError):
    """A caller passed a value DevStream cannot store or act on."""


class NotFound(DevStreamError):
    """The requested record does not exist."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} not found", hint="list existing ones to find the id")
        self.kind = kind
        self.key = key


class ConstraintViolation(DevStreamError):
    """The database refused a write that breaks a rule (foreign key, check, unique)."""

    hint = "nothing was written"


class StorageError(DevStreamError):
    """The database could not be opened, read or written."""


class StoreClosed(StorageError):
    """A store used after it was closed (after its `async with DevStream.open(...)` block)."""

    hint = "open it again with DevStream.open, and use it inside that block"


class StorageFull(StorageError):
    """The disk (or the database's size limit) is full: the write was rolled back."""

    hint = "free disk space and retry; what was stored before is intact"


class StorageBusy(StorageError):
    """Another connection held the database's write lock for longer than busy_timeout."""

    hint = "retry, or raise busy_timeout_ms if another process writes for long"


class PoolTimeout(StorageError):
    """No connection became free within the configured pool timeout."""

    hint = "raise pool_timeout or pool_size, or lower concurrency"


class ServerUnsupported(StorageError):
    """The database server lacks what DevStream needs: a version, or the pgvector extension."""


class SchemaError(StorageError):
    """The database schema is not the one this version of DevStream expects."""


class SchemaTooOld(SchemaError):
    """The database predates this version's schema."""

    hint = "run `devstream init` to migrate it"


class SchemaTooNew(SchemaError):
    """The database was migrated by a newer DevStream than this one."""

    hint = "upgrade devstream; this version cannot safely use that database"


class NotInitialised(SchemaError):
    """The database has no DevStream schema at all."""

    hint = "run `devstream init` first"


class EmbeddingError(DevStreamError):
    """An embedder gave no usable vectors: a malformed response, NaN/inf values, a wrong count."""


class EmbeddingUnavailable(EmbeddingError):
    """The embedding server cannot be reached, keeps failing, or its circuit breaker is open."""

    hint = "entries are stored as pending; run `devstream memory backfill` once it is back"


class EmbeddingRefused(EmbeddingError):
    """The embedding server answered this request with an error: a refusal of its input
    (too long for the model, say), or of every input when the server itself is failing."""


class EmbeddingServerFailing(EmbeddingRefused, EmbeddingUnavailable):
    """The server kept answering 429 or 5xx through every retry: unavailable for now, unless
    only some inputs bring it on (a backfill finds out by asking with others)."""


class EmbeddingDeferred(EmbeddingError):
    """The caller chose not to embed now (a hook): the entry is stored as pending."""

    hint = "`devstream memory backfill`, or a running `devstream mcp`, embeds it"


class DimensionMismatch(EmbeddingError):
    """The embedding server returned vectors of another dimension than the configured one."""

    def __init__(self, *, model: str, expected: int, actual: int) -> None:
        super().__init__(
            f"embedding model {model!r} returned {actual}-dimensional vectors, "
            f"but the configured dimension is {expected}",
            hint="set the configured dimension and model consistently, "
            "then run `devstream memory reembed`",
        )
        self.model = model
        self.expected = expected
        self.actual = actual


class BadExport(InvalidInput):
    """A line of an export cannot be imported as it is: the import wrote nothing."""

    hint = "nothing was imported; export the store again, or fix the line"

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line} of the export: {problem}")
        self.line = line


class OutputFailed(DevStreamError):
    """A file DevStream was asked to write (an export) could not be written."""

    hint = "name a file in a folder that exists and can be written, with room on its disk"


class ExportTooNew(DevStreamError):
    """The export was written by a newer DevStream, in a format this one does not know."""

    hint = "upgrade devstream to import it; nothing was imported"


class ScanFailed(DevStreamError):
    """The secret scan of a capture did not finish: nothing it was to scan may be stored."""


class IllegalTransition(DevStreamError):
    """A plan or task cannot move from its current state to the requested one."""

    def __init__(self, kind: str, key: int, current: str, requested: str, allowed: tuple[str, ...]):
        options = ", ".join(allowed) if allowed else "none: it is final"
        super().__init__(
            f"{kind} {key} is {current}; it cannot become {requested}",
            hint=f"from {current} it can become: {options}",
        )
        self.kind = kind
        self.key = key
        self.current = current
        self.requested = requested


class TaskBlocked(DevStreamError):
    """A task cannot start while tasks it depends on are not completed."""

    def __init__(self, task_id: int, waiting_on: list[int]):
        super().__init__(
            f"task {task_id} is blocked by unfinished task(s) "
            + ", ".join(str(i) for i in waiting_on),
            hint="complete those first, or drop the dependency (`devstream task undepend`)",
        )
        self.task_id = task_id
        self.waiting_on = waiting_on


class DependencyCycle(InvalidInput):
    """A new dependency would make tasks wait on each other forever."""

    def __init__(self, cycle: list[int]):
        super().__init__(
            "dependency would create a cycle: " + " -> ".join(f"task {i}" for i in cycle),
            hint="nothing was written",
        )
        self.cycle = cycle
