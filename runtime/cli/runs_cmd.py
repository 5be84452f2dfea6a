"""`stepflow runs list|show|cancel|watch`: runs in the local journal, or on a node with `--url`.

`list`/`show` read the local journal unless `--url` names a node; both print the
same JSON shapes either way (remote.py says what a node cannot tell). `cancel` and `watch` always
talk to a node.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..config import discover_config
from ..errors import UserError
from ..state.base import RunFilter, RunRecord, StateStore, StepRecord, StoreError
from .options import config_option
from .run_ids import normalise_run_id
from .state_options import local_state, state_options
from .submit_cmd import DEFAULT_URL, url_option

FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="`json` for scripts.",
)


@click.group("runs")
def group() -> None:
    """Inspect runs recorded in the local journal, or on a node with --url."""


@group.command("list")
@config_option
@state_options
@FORMAT
@click.option("--status", type=click.Choice(["running", "completed", "failed", "cancelled"]))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--all", "include_sub_runs", is_flag=True, help="Include sub-runs (map/eval/...).")
@url_option(None)
def list_runs(
    config_path: Path | None,
    state_dir: Path | None,
    in_memory: bool,
    fmt: str,
    status: str | None,
    limit: int,
    include_sub_runs: bool,
    url: str | None,
) -> None:
    """Runs, newest first."""
    if url:
        rows = _remote_list(url, status, limit, include_sub_runs)
    else:
        filters = RunFilter(status=status, roots_only=not include_sub_runs, limit=limit)
        runs = _read(config_path, state_dir, in_memory, lambda s: s.list_runs(filters))
        rows = [_run_json(r) for r in runs]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None)
    table.add_column("run id", no_wrap=True, min_width=32)
    table.add_column("flow")
    table.add_column("status", no_wrap=True)
    table.add_column("items", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    for row in rows:
        items = f"{row['itemsCompleted'] + row['itemsFailed']}/{row['itemCount']}"
        table.add_row(
            row["runId"].replace("-", ""), row["flowName"] or "-", row["status"], items,
            row["createdAt"][:19].replace("T", " "),
        )  # fmt: skip
    Console().print(table if rows else "No runs recorded.")


@group.command("show")
@click.argument("run_id")
@config_option
@state_options
@FORMAT
@url_option(None)
def show_run(
    run_id: str,
    config_path: Path | None,
    state_dir: Path | None,
    in_memory: bool,
    fmt: str,
    url: str | None,
) -> None:
    """One run: its items and every step's status, attempts and error."""
    run_id = normalise_run_id(run_id)
    if url:
        body = _remote_show(url, run_id)
        if fmt == "json":
            click.echo(json.dumps(body, indent=2))
        else:
            _print_run(body)
        return

    async def read(store: StateStore) -> tuple[RunRecord | None, list[StepRecord], list[RunRecord]]:
        run = await store.get_run(run_id)
        if run is None:
            return None, [], []
        subs = await store.list_runs(RunFilter(parent_run_id=run_id))
        return run, await store.get_steps(run_id), subs

    run, steps, subs = _read(config_path, state_dir, in_memory, read)
    if run is None:
        raise UserError(f"no run with id {run_id}")
    body = {
        **_run_json(run),
        "items": [
            {"itemIndex": i.item_index, "status": i.status, "result": i.result} for i in run.items
        ],
        "steps": [_step_json(s) for s in steps],
        "subRuns": [s.run_id for s in reversed(subs)],
    }
    if fmt == "json":
        click.echo(json.dumps(body, indent=2))
        return
    _print_run(body)


def _read(config_path: Path | None, state_dir: Path | None, in_memory: bool, query: Any) -> Any:
    config = discover_config(config_path, None)
    state = local_state(config, state_dir, in_memory)

    async def run() -> Any:
        await state.store.open()
        try:
            return await query(state.store)
        finally:
            await state.store.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        raise UserError(str(exc)) from None


def _run_json(run: RunRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "runId": run.run_id,
        "flowName": run.flow_name,
        "flowId": run.flow_id,
        "status": run.status,
        "createdAt": run.created_at,
        "completedAt": run.completed_at,
        "itemCount": len(run.items),
        "itemsCompleted": sum(1 for i in run.items if i.status == "completed"),
        "itemsFailed": sum(1 for i in run.items if i.status == "failed"),
        "itemsRunning": sum(1 for i in run.items if i.status == "running"),
    }
    if run.parent_run_id:
        out["parentRunId"] = run.parent_run_id
        out["rootRunId"] = run.root_run_id
    return out


def _step_json(step: StepRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "stepId": step.step_id,
        "stepIndex": step.step_index,
        "itemIndex": step.item_index,
        "status": step.status,
        "attempts": step.attempts,
    }
    if step.task_id:
        out["taskId"] = step.task_id
    if step.result is not None:
        if step.result.get("outcome") == "failed":
            out["error"] = step.result.get("error")
        else:
            out["result"] = step.result.get("result")
    if step.updated_at:
        out["updatedAt"] = step.updated_at
    return out


def _print_run(body: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"[bold]{body['runId'].replace('-', '')}[/] {body['flowName'] or ''}  "
        f"status: [bold]{body['status']}[/]  created: {body['createdAt']}"
    )
    table = Table("item", "step", "status", "attempts", "error", box=None)
    for step in body["steps"]:
        error = step.get("error") or {}
        table.add_row(
            str(step["itemIndex"]), step["stepId"] or f"#{step['stepIndex']}", step["status"],
            "-" if step["attempts"] is None else str(step["attempts"]),
            f"{error.get('code', '')} {error.get('message', '')}".strip(),
        )  # fmt: skip
    console.print(table)
    for item in body["items"]:
        console.print(f"item {item['itemIndex']}: {item['status']}")
    if body["subRuns"]:
        console.print(f"sub-runs: {', '.join(s.replace('-', '') for s in body['subRuns'])}")


@group.command("cancel")
@click.argument("run_id")
@url_option(DEFAULT_URL)
@FORMAT
def cancel_run(run_id: str, url: str, fmt: str) -> None:
    """Cancel a run on a node; prints the run's summary afterwards."""
    from .remote import NodeClient, run_json

    run_id = normalise_run_id(run_id)
    with NodeClient(url) as node:
        body = run_json(node.cancel_run(run_id))
    if fmt == "json":
        click.echo(json.dumps(body, indent=2))
        return
    note = {"cancelled": "", "running": " (cancellation requested)"}.get(
        body["status"], " (the run had already finished)"
    )
    click.echo(f"{body['runId'].replace('-', '')} {body['status']}{note}")


@group.command("watch")
@click.argument("run_id")
@url_option(DEFAULT_URL)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="`json`: one JSON object per event (JSONL).",
)  # fmt: skip
def watch_run(run_id: str, url: str, fmt: str) -> None:
    """Stream a run's events from a node, one line each, until the run completes.

    Exits 0 when the run completed, 1 when it failed or was cancelled.
    """
    from .remote import TERMINAL, NodeClient, event_json, event_line, normalise_id, status_word

    run_id = normalise_run_id(run_id)
    final: str | None = None
    with NodeClient(url) as node:
        node.get_run(run_id)  # NOT_FOUND and UNAVAILABLE are clearer here than mid-stream
        for event in node.run_events(run_id):
            body = event_json(event)
            click.echo(json.dumps(body) if fmt == "json" else event_line(body))
            if (
                event.WhichOneof("event") == "run_completed"
                and normalise_id(event.run_completed.run_id or run_id) == run_id
            ):
                final = body["status"]
                break
        if final is None:
            summary = node.get_run(run_id).summary
            if summary.status not in TERMINAL:
                raise UserError(f"the node closed the event stream of run {run_id} early")
            final = status_word(summary.status)
    if final != "completed":
        raise SystemExit(1)


def _remote_list(
    url: str, status: str | None, limit: int, include_sub_runs: bool
) -> list[dict[str, Any]]:
    from .remote import NodeClient, run_json, status_number

    filters: dict[str, Any] = {"roots_only": not include_sub_runs, "limit": limit}
    if status:
        filters["status"] = status_number(status)
    with NodeClient(url) as node:
        return [run_json(r) for r in node.list_runs(**filters)]


def _remote_show(url: str, run_id: str) -> dict[str, Any]:
    from .remote import NodeClient, item_json, run_json, step_json

    with NodeClient(url) as node:
        answer = node.get_run(run_id)
        items = node.run_items(run_id)
        subs = node.list_runs(parent_run_id=run_id)
    return {
        **run_json(answer.summary),
        "items": [item_json(i) for i in sorted(items, key=lambda i: i.item_index)],
        "steps": [step_json(s) for s in answer.steps],
        "subRuns": [s.run_id for s in reversed(subs)],
    }
