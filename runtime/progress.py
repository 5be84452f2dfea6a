"""A progress display on stderr for batches and long runs, only when stderr is a terminal."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import FlowResult
from .executor import RunExecution, RunObserver, TaskStart
from .model import Step

SHOW_AFTER_SECS = 1.0


class ProgressDisplay(RunObserver):
    """Counts items and steps of the root run; appears at once for batches, later for long runs."""

    def __init__(self, total_items: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.total_items = total_items
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task("items", total=total_items, detail="")
        self._steps_done = 0
        self._steps_running = 0
        self._failed = 0
        self._timer: asyncio.TimerHandle | None = None

    @staticmethod
    def wanted() -> bool:
        return sys.stderr.isatty()

    def _detail(self) -> str:
        failed = f", {self._failed} failed" if self._failed else ""
        return f"steps: {self._steps_done} done, {self._steps_running} running{failed}"

    def _refresh(self) -> None:
        self._progress.update(self._task, detail=self._detail())

    async def run_started(self, run: RunExecution) -> None:
        if run.parent is not None:
            return
        if self.total_items > 1:
            self._progress.start()
        else:
            self._timer = asyncio.get_running_loop().call_later(
                SHOW_AFTER_SECS, self._progress.start
            )

    async def tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        self._steps_running += len(tasks)
        self._refresh()

    async def task_completed(
        self, run: RunExecution, item_index: int, step: Step, result: FlowResult
    ) -> None:
        self._steps_done += 1
        self._steps_running = max(0, self._steps_running - 1)
        self._refresh()

    async def item_completed(self, run: RunExecution, item_index: int, result: FlowResult) -> None:
        if run.parent is None:
            self._failed += 0 if result.ok else 1
            self._progress.advance(self._task)
            self._refresh()

    async def run_completed(self, run: RunExecution, status: str) -> None:
        if run.parent is None:
            self.stop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._progress.stop()
