"""Event store and the representations built from it (windows, ROOT interop)."""

from fastreco.data.store import SCHEMA_VERSION, EventBatch, EventStore, write_shard

__all__ = ["SCHEMA_VERSION", "EventBatch", "EventStore", "write_shard"]
