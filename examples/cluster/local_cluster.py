"""`make cluster` / `make cluster-stop`: a laptop cluster on loopback for demos and manual tests.

`start` launches etcd, three nodes in two regions (node-1 and node-2 in region-a, node-3 in
region-b) and two stepflow-py workers (one on node-2, one on node-3, queue `python`), records
their pids in `.venv/cluster/state.json` and prints how to use them. `stop` ends them (SIGTERM,
so nodes hand their runs over and drain). Logs are in `.venv/cluster/*.log`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from stepflow_mesh.registry.etcd_process import EtcdProcess

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = REPO / ".venv" / "cluster"
STATE = STATE_DIR / "state.json"
BIN = Path(sys.executable).parent
NODES = (("node-1", "region-a"), ("node-2", "region-a"), ("node-3", "region-b"))
WORKERS = (("node-2", "worker-a"), ("node-3", "worker-b"))


def _config(etcd: str) -> Path:
    config = yaml.safe_load((REPO / "deploy" / "config" / "stepflow-config.yml").read_text())
    config["cluster"]["etcd"]["endpoints"] = [etcd]
    path = STATE_DIR / "stepflow-config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _node(node_id: str, region: str, etcd: str, config: Path) -> tuple[int, dict[str, int]]:
    out = STATE_DIR / f"{node_id}.out"
    out.unlink(missing_ok=True)
    with open(STATE_DIR / f"{node_id}.log", "ab") as log, open(out, "wb") as stdout:
        proc = subprocess.Popen(
            [str(BIN / "stepflow"), "serve", "--port", "0", "--http-port", "0",
             "--node-id", node_id, "--region", region, "--zone", f"{region}-1",
             "--etcd", etcd, "--config", str(config)],
            cwd=STATE_DIR, stdout=stdout, stderr=log, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not out.read_text().strip():  # the node prints its ports once it serves
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{node_id} did not start; see {STATE_DIR / (node_id + '.log')}")
        time.sleep(0.1)
    return proc.pid, json.loads(out.read_text().splitlines()[0])


def start() -> int:
    if STATE.exists():
        print(f"a cluster is already running ({STATE}); `make cluster-stop` first", file=sys.stderr)
        return 1
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    etcd = EtcdProcess(STATE_DIR / "etcd")
    etcd.start()
    assert etcd.process is not None
    state: dict[str, object] = {"etcd": {"pid": etcd.process.pid, "endpoint": etcd.endpoint}}
    config = _config(etcd.endpoint)
    nodes: dict[str, dict[str, object]] = {}
    for node_id, region in NODES:
        pid, ports = _node(node_id, region, etcd.endpoint, config)
        nodes[node_id] = {"pid": pid, "region": region, **ports}
    workers = {}
    for node_id, label in WORKERS:
        env = {**os.environ, "STEPFLOW_TASKS_URL": f"127.0.0.1:{nodes[node_id]['port']}",
               "STEPFLOW_QUEUE_NAME": "python"}  # fmt: skip
        with open(STATE_DIR / f"{label}.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, str(REPO / "examples" / "python-worker" / "worker.py")],
                cwd=REPO / "examples" / "python-worker", env=env, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        workers[label] = {"pid": worker.pid, "node": node_id}
    state.update(nodes=nodes, workers=workers)
    STATE.write_text(json.dumps(state, indent=2))
    first = nodes["node-1"]
    print(f"etcd {etcd.endpoint}")
    for node_id, info in nodes.items():
        print(f"{node_id} ({info['region']}): gRPC 127.0.0.1:{info['port']}, "
              f"REST http://127.0.0.1:{info['httpPort']}/api/v1")  # fmt: skip
    print("\ntry:")
    print(f"  .venv/bin/stepflow cluster status --etcd {etcd.endpoint}")
    print(f"  .venv/bin/stepflow submit "
          f"--url 127.0.0.1:{first['port']} --flow examples/cluster/flow.yaml "
          "--input examples/cluster/input.json")  # fmt: skip
    print("  make cluster-stop")
    return 0


def stop() -> int:
    if not STATE.exists():
        print("no cluster is running", file=sys.stderr)
        return 0
    state = json.loads(STATE.read_text())
    pids = [w["pid"] for w in state["workers"].values()]
    pids += [n["pid"] for n in state["nodes"].values()]
    for pid in pids:  # nodes drain and hand over; workers stop
        _signal(pid, signal.SIGTERM)
    for pid in pids:
        _wait_gone(pid, 20)
    _signal(state["etcd"]["pid"], signal.SIGTERM)
    _wait_gone(state["etcd"]["pid"], 10)
    STATE.unlink()
    print("cluster stopped")
    return 0


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    _signal(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(start() if sys.argv[1:] == ["start"] else stop())
