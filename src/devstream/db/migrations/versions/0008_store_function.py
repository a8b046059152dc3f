"""PostgreSQL: a store of new memories in one statement. Nothing on SQLite.

Many writers store at once on PostgreSQL, so a store locks its contents (an advisory lock
per content hash), looks for them, and inserts what is new. Sent from the client, that is
a round trip per step; with clients and server on the same cores, the writers then spend
their time waiting for each other's turns. `devstream_store_memories` does the three in
one call. The look and the insert are one statement after the locks: in READ COMMITTED
(which every DevStream connection sets) each statement of a PL/pgSQL function takes a new
snapshot, so it sees every store of the same contents that committed first, and the look
and the insert see the same rows.

It returns the entries stored before with one of the contents (in any scope), and those it
inserted, each with `created`. The entry is the table's row type, so a later column needs
no change here; a later change to what a new memory holds is a new migration.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_COLUMNS = (
    "content, content_type, keywords, content_hash, plan_id, phase_id, task_id, embedding, "
    "embedding_model, embedding_dim, embedding_status"
)

# A lock key is a content hash's first 60 bits, a positive bigint; keys are taken in one
# order, so two stores never deadlock. Without sequential scans: a plan cached while the
# table was new and nearly empty would otherwise go on scanning it whole as it grows.
_STORE = f"""
CREATE FUNCTION devstream_store_memories(
    stamp timestamptz, new_contents text[], new_types text[], new_keywords text[],
    new_hashes text[], new_plan_ids bigint[], new_phase_ids bigint[], new_task_ids bigint[],
    new_embeddings vector[], new_models text[], new_dims integer[], new_statuses text[]
) RETURNS TABLE (created boolean, entry memory_entries)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(keys.key)
    FROM (SELECT DISTINCT ('x' || left(h, 15))::bit(60)::bigint AS key
          FROM unnest(new_hashes) AS h) AS keys
    ORDER BY keys.key;
    RETURN QUERY
    WITH found AS (
        SELECT e FROM memory_entries AS e WHERE e.content_hash = ANY (new_hashes)
    ), added AS (
        INSERT INTO memory_entries AS e
            ({_NEW_COLUMNS}, access_count, embedding_attempts, created_at, updated_at)
        SELECT {_NEW_COLUMNS}, 0, 0, stamp, stamp
        FROM unnest(new_contents, new_types, new_keywords, new_hashes, new_plan_ids,
                    new_phase_ids, new_task_ids, new_embeddings, new_models, new_dims,
                    new_statuses)
             WITH ORDINALITY AS n({_NEW_COLUMNS}, position)
        WHERE NOT EXISTS (
            SELECT FROM found AS f
            WHERE (f.e).content_hash = n.content_hash
              AND (f.e).plan_id IS NOT DISTINCT FROM n.plan_id
              AND (f.e).phase_id IS NOT DISTINCT FROM n.phase_id
              AND (f.e).task_id IS NOT DISTINCT FROM n.task_id)
        ORDER BY n.position
        RETURNING e
    )
    SELECT false, f.e FROM found AS f
    UNION ALL
    SELECT true, a.e FROM added AS a;
END
$$
"""
_SIGNATURE = (
    "devstream_store_memories(timestamptz, text[], text[], text[], text[], bigint[], "
    "bigint[], bigint[], vector[], text[], integer[], text[])"
)


def _on_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _on_postgresql():
        op.execute(_STORE)


def downgrade() -> None:
    if _on_postgresql():
        op.execute(f"DROP FUNCTION {_SIGNATURE}")
