"""The domain's words and limits: statuses, content types, sizes.

A leaf that imports nothing, so any layer can use it, and the command line can offer these
as choices without loading the storage stack.
"""

PLAN_STATUSES = ("draft", "active", "completed", "archived", "cancelled")
PHASE_STATUSES = ("pending", "active", "completed")
TASK_STATUSES = ("pending", "active", "completed", "failed", "skipped")
CONTENT_TYPES = ("code", "documentation", "context", "output", "error", "decision", "learning")
EMBEDDING_STATUSES = ("pending", "embedded", "failed")

# Tasks that count as done for their phase; tasks whose work has begun; plans still open.
DONE = ("completed", "skipped")
WORKED_ON = ("active", "completed", "failed")
OPEN_PLANS = ("draft", "active")
# A run of a task ends with one of these events (it began with pending -> active).
RUN_ENDS = ("completed", "failed", "skipped")

MAX_TITLE = 200  # characters in a plan or task title, or a phase name
MAX_SESSION_ID = 200  # characters in an assistant's session id
MIN_PRIORITY, MAX_PRIORITY = 1, 10  # 10 is the most important
MAX_TASK_MINUTES = 10
CONTEXT_BUDGET = 2_000  # tokens of context injected when a task starts
BRIEF_MAX_CHARS = 10_000  # of the brief a session starts with (hooks, prime)
BRIEF_MIN_CHARS = 400  # the shortest a brief may be asked to be: its fence and label take 232
HOOK_EVENTS = ("session-start", "post-tool", "stop", "session-end")  # `devstream hook EVENT`
# The embedding model used unless configured otherwise, and the length of its vectors.
EMBED_MODEL, EMBED_DIMENSION = "embeddinggemma", 768
HASHING_MODEL = "devstream-hashing-v2"  # the offline embedder's vectors, when no Ollama is set
