"""The etcd key layout of the mesh (durability.md §9), in one place.

Under `{prefix}/mesh/` (ids are percent-encoded, so a `/` in an id cannot escape its prefix):

| Key | Value |
|---|---|
| `journal/{root}/{seq:020d}` | `{"t": timestamp, "n": append nonce, "e": event}`, one per entry |
| `heads/{root}` | `{"last_sequence", "entry_count", "finalized", "status", "completed_at"}`: every
  change to the tree's journal or metadata rewrites it, so its mod_revision guards the tree |
| `checkpoints/{root}` | `{"sequence": n}` + newline + checkpoint bytes |
| `runs/{root}/{run}` | run JSON without items (`item_count` instead) |
| `items/{root}/{run}/{index:010d}` | item JSON; absent = running (or cancelled with the run) |
| `steps/{root}/{run}/{item:010d}/{step:010d}` | step JSON |
| `runindex/{run}` | `{"root": root}`: finds a run's tree |
| `done/{run}` | `{"status", "finishedAtSeqno"}`, written with the run's terminal `run_completed` |
| `blobs/{sha256}` | `{"type": t}` + newline + blob bytes |

Leases keep upstream's layout under `{lease_prefix}` (default `{prefix}/leases`):
`runs/{root}` = `{"owner", "acquired_at", "expires_at"}`, `heartbeats/{node}` =
`{"last_heartbeat", "orchestrator_url"}`, both on the node's single etcd lease.
"""

from __future__ import annotations

from urllib.parse import quote, unquote


def _id(value: str) -> str:
    return quote(value, safe="")


def decode_id(text: str) -> str:
    return unquote(text)


class Keys:
    def __init__(self, prefix: str = "/stepflow", lease_prefix: str | None = None) -> None:
        prefix = prefix.rstrip("/")
        self.mesh = f"{prefix}/mesh/"
        self.leases = (lease_prefix or f"{prefix}/leases").rstrip("/") + "/"

    def _k(self, *parts: str) -> bytes:
        return (self.mesh + "/".join(parts)).encode()

    # journal
    def journal_dir(self, root: str) -> bytes:
        return self._k("journal", _id(root), "")

    def journal(self, root: str, sequence: int) -> bytes:
        return self._k("journal", _id(root), f"{sequence:020d}")

    @staticmethod
    def sequence_of(key: bytes) -> int:
        return int(key.rsplit(b"/", 1)[1])

    def heads_dir(self) -> bytes:
        return self._k("heads", "")

    def head(self, root: str) -> bytes:
        return self._k("heads", _id(root))

    def root_of_head(self, key: bytes) -> str:
        return decode_id(key.decode()[len(self.mesh) + len("heads/") :])

    def checkpoint(self, root: str) -> bytes:
        return self._k("checkpoints", _id(root))

    # metadata
    def runs_dir(self, root: str | None = None) -> bytes:
        return self._k("runs", _id(root), "") if root is not None else self._k("runs", "")

    def run(self, root: str, run_id: str) -> bytes:
        return self._k("runs", _id(root), _id(run_id))

    def items_dir(self, root: str | None = None, run_id: str | None = None) -> bytes:
        if root is None:
            return self._k("items", "")
        if run_id is None:
            return self._k("items", _id(root), "")
        return self._k("items", _id(root), _id(run_id), "")

    def item(self, root: str, run_id: str, index: int) -> bytes:
        return self._k("items", _id(root), _id(run_id), f"{index:010d}")

    def steps_dir(self, root: str, run_id: str | None = None, item: int | None = None) -> bytes:
        if run_id is None:
            return self._k("steps", _id(root), "")
        if item is None:
            return self._k("steps", _id(root), _id(run_id), "")
        return self._k("steps", _id(root), _id(run_id), f"{item:010d}", "")

    def step(self, root: str, run_id: str, item: int, step: int) -> bytes:
        return self._k("steps", _id(root), _id(run_id), f"{item:010d}", f"{step:010d}")

    def run_index(self, run_id: str) -> bytes:
        return self._k("runindex", _id(run_id))

    def done(self, run_id: str) -> bytes:
        return self._k("done", _id(run_id))

    def blob(self, blob_id: str) -> bytes:
        return self._k("blobs", _id(blob_id))

    # leases
    def lease_runs_dir(self) -> bytes:
        return (self.leases + "runs/").encode()

    def lease(self, root: str) -> bytes:
        return (self.leases + "runs/" + root).encode()

    def root_of_lease(self, key: bytes) -> str:
        return key.decode()[len(self.leases) + len("runs/") :]

    def heartbeats_dir(self) -> bytes:
        return (self.leases + "heartbeats/").encode()

    def heartbeat(self, node_id: str) -> bytes:
        return (self.leases + "heartbeats/" + node_id).encode()

    def node_of_heartbeat(self, key: bytes) -> str:
        return key.decode()[len(self.leases) + len("heartbeats/") :]
