"""Journal retention on a long-lived node (durability.md G5): a real `stepflow serve` finalizes the
journal of a finished run tree once `journal.retentionSecs` have passed, and keeps serving the
run's results. The journal is read from the node's SQLite file by a second process (this one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from node_process import NodeProcess
from stepflow_mesh.runtime.state.base import JournalEntry
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore
from waiting import wait_until

CONFIG = """\
plugins:
  builtin: {type: builtin}
routes:
  "/builtin": [{plugin: builtin}]
journal: {retentionSecs: 1}
"""
FLOW = {
    "name": "retained",
    "steps": [
        {"id": "a", "component": "/builtin/noop", "input": {"x": {"$input": "x"}}},
        {"id": "b", "component": "/builtin/noop", "input": {"a": {"$step": "a"}}},
    ],
    "output": {"$step": "b"},
}


def read_journal(database: Path, run_id: str) -> list[JournalEntry]:
    async def read() -> list[JournalEntry]:
        store = SqliteStateStore(database)
        await store.open()
        try:
            return await store.read_journal(run_id)
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_node_finalizes_finished_journals_and_still_serves_results(tmp_path: Path) -> None:
    (tmp_path / "stepflow-config.yml").write_text(CONFIG)
    node = NodeProcess(tmp_path, ["--state-dir", str(tmp_path / "state")]).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}/api/v1", timeout=60) as api:
            stored = api.post("/flows", json={"flow": FLOW})
            assert stored.status_code == 200, stored.text
            created = api.post(
                "/runs", json={"flowId": stored.json()["flowId"], "input": [{"x": 7}], "wait": True}
            )
            assert created.status_code == 200, created.text
            run_id = created.json()["summary"]["runId"]
            database = tmp_path / "state" / "stepflow.db"
            assert len(read_journal(database, run_id)) > 1  # the live journal, step by step

            def finalized() -> list[JournalEntry] | None:
                entries = read_journal(database, run_id)
                return entries if len(entries) == 1 else None

            [final] = wait_until(finalized, 30, "the finished run's journal to be finalized")
            assert final.event["type"] == "run_completed"
            served = api.get(f"/runs/{run_id}")
            assert served.status_code == 200, served.text
            assert served.json()["summary"]["status"] == 2  # EXECUTION_STATUS_COMPLETED
            items = api.get(f"/runs/{run_id}/items")
            assert items.status_code == 200, items.text
            [item] = items.json()["results"]
            assert item["output"] == {"a": {"x": 7}}  # results outlive the step-by-step journal
    finally:
        assert node.stop() == 0
    assert "Traceback" not in node.log
    assert "finalized the journals of 1 finished run trees" in node.log
