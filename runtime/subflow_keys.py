"""Deterministic sub-run keys (durability.md §3): UUIDv5 over a per-step counter.

Namespace = the parent run id; name = the counter as 8 little-endian bytes. `uuid.uuid5` only takes
text names, so the RFC 4122 v5 construction is spelled out here.
"""

from __future__ import annotations

import hashlib
import uuid


def subflow_key(parent_run_id: str, counter: int) -> str:
    namespace = uuid.UUID(parent_run_id)
    digest = hashlib.sha1(namespace.bytes + counter.to_bytes(8, "little")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))
