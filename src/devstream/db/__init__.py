"""Storage: engine and pool, the isolation seam, schema, migrations, repositories."""

from devstream.db.pool import ConnectionPool, PoolStats
from devstream.db.queries import QueryManager

__all__ = ["ConnectionPool", "PoolStats", "QueryManager"]
