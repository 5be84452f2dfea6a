"""Running a durable run tree from the CLI: open the state, start plugins, handle Ctrl-C.

First Ctrl-C drains (nothing new is dispatched, in-flight steps finish and are journalled); a second
one stops at once (in-flight steps stay in-flight in the journal and are re-dispatched on resume).
Either way the run is left resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence

import click

from ..config import Config
from ..durable import DurableRunner
from ..engine import RunOutcome, Runtime
from ..errors import UserError
from ..executor import INTERRUPTED, RunObserver
from ..state.base import StoreError
from .state_options import LocalState

Action = Callable[[DurableRunner, Sequence[RunObserver]], Awaitable[RunOutcome]]
EXIT_INTERRUPTED = 130


def run_to_completion(
    config: Config, state: LocalState, observers: Sequence[RunObserver], action: Action
) -> RunOutcome:
    outcome = asyncio.run(_supervised(config, state, observers, action))
    if outcome.status == INTERRUPTED:
        short = outcome.run_id.replace("-", "")
        click.echo(f"Run {short} interrupted; continue it with: stepflow resume {short}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    return outcome


async def _supervised(
    config: Config, state: LocalState, observers: Sequence[RunObserver], action: Action
) -> RunOutcome:
    try:
        await state.store.open()
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        async with Runtime(config, blobs=state.blobs) as runtime:
            runner = DurableRunner(runtime, state.store, state.settings)
            if state.durable:
                await runner.finalize_expired()
            main = asyncio.current_task()
            assert main is not None
            with _interrupts(runner, main) as interrupts:
                try:
                    return await action(runner, observers)
                except asyncio.CancelledError:
                    if not interrupts.presses:
                        raise
                    return RunOutcome(runner.active_run_id or "", INTERRUPTED, [])
    except StoreError as exc:
        note = " The journal is intact; fix the cause and resume the run." if state.durable else ""
        raise UserError(f"{exc}.{note}") from None
    finally:
        await state.store.close()


class _Presses:
    presses = 0


@contextlib.contextmanager
def _interrupts(runner: DurableRunner, main: asyncio.Task[RunOutcome]) -> Iterator[_Presses]:
    loop = asyncio.get_running_loop()
    state = _Presses()

    def on_sigint() -> None:
        state.presses += 1
        if state.presses == 1:
            click.echo(
                "\nInterrupted: finishing in-flight steps (Ctrl-C again to stop now)", err=True
            )
            runner.drain()
        else:
            runner.drain()
            main.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # not the main thread / platform without signals
        yield state
        return
    try:
        yield state
    finally:
        loop.remove_signal_handler(signal.SIGINT)
