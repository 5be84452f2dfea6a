"""A supervised child process speaking over stdin/stdout, with its stderr drained to a tail.

Shared by the stdio adapters (worker-protocol.md §6.1): `${VAR}` / `${VAR:-default}` substitution,
command resolution (PATH, then the working directory), the child in its own process group (so
killing it takes its children along), stdout read with a large line limit, and stderr read
continuously — a full stderr pipe must never block the server — keeping the last 64 KiB for
failure details and logging each line (debug, or info with `STEPFLOW_COMPONENT_STDERR=verbose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STDERR_TAIL_BYTES = 64 * 1024
# Accept stdout lines of at least 16 MiB (old SDK readers stop at 512 KiB on their side).
STDOUT_LINE_LIMIT = 32 * 1024 * 1024
STOP_GRACE_SECS = 2.0
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(
    text: str, environ: Mapping[str, str], unset: Callable[[str], str] | None = None
) -> str:
    """`${VAR}` → its value; `${VAR:-default}` → the default when VAR is unset or empty.

    An unset VAR without a default becomes `unset(name)` (which may raise), else ''. The one
    substitution both process adapters use (worker-protocol.md §6.1, §7).
    """

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            return unset(name) if unset is not None else ""
        return value

    return _VAR.sub(replace, text)


def resolve_command(command: str, working_dir: Path, path: str | None) -> str | None:
    """The executable for `command`: a path (relative to the working directory) or a PATH name,
    falling back to a file of that name in the working directory. None when not found."""
    if os.sep in command or (os.altsep and os.altsep in command):
        candidate = Path(command)
        if not candidate.is_absolute():
            candidate = working_dir / candidate
        return str(candidate) if candidate.is_file() else None
    found = shutil.which(command, path=path)
    if found:
        return found
    local = working_dir / command
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


def describe_command(command: str, args: Sequence[str]) -> str:
    return shlex.join([command, *args])


class StderrTail:
    """Reads a stream to its end, logging each line and keeping the last `limit` bytes."""

    def __init__(self, stream: asyncio.StreamReader, logger: logging.Logger, level: int) -> None:
        self._stream = stream
        self._log = logger
        self._level = level
        self._tail = bytearray()
        self._partial = b""
        self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            try:
                chunk = await self._stream.read(65536)
            except (ConnectionError, OSError):
                break
            if not chunk:
                break
            self._tail += chunk
            if len(self._tail) > STDERR_TAIL_BYTES:
                del self._tail[: len(self._tail) - STDERR_TAIL_BYTES]
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            if len(self._partial) > STDERR_TAIL_BYTES:  # a huge unterminated line: log it anyway
                lines.append(self._partial)
                self._partial = b""
            for line in lines:
                self._log.log(self._level, "%s", line.decode("utf-8", "replace").rstrip("\r"))
        if self._partial:
            self._log.log(self._level, "%s", self._partial.decode("utf-8", "replace"))
            self._partial = b""

    def text(self, max_bytes: int = STDERR_TAIL_BYTES) -> str:
        data = bytes(self._tail[-max_bytes:])
        return data.decode("utf-8", "replace").strip()

    async def wait(self, timeout: float) -> None:
        """Wait until the stream hit EOF (the child and anything sharing its stderr exited)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), timeout)


class ChildProcess:
    """One spawned child: stdin/stdout as streams, stderr drained into a tail."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: StderrTail) -> None:
        self.process = process
        self.stderr = stderr
        assert process.stdout is not None and process.stdin is not None
        self.stdout: asyncio.StreamReader = process.stdout
        self.stdin: asyncio.StreamWriter = process.stdin

    @classmethod
    async def spawn(
        cls,
        executable: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        stderr_log: logging.Logger,
    ) -> ChildProcess:
        """Start the child in a new process group; OSError when it cannot be started."""
        process = await asyncio.create_subprocess_exec(
            executable, *args, cwd=cwd, env=dict(env),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=STDOUT_LINE_LIMIT,
        )  # fmt: skip
        verbose = os.environ.get("STEPFLOW_COMPONENT_STDERR", "").lower() == "verbose"
        assert process.stderr is not None
        tail = StderrTail(process.stderr, stderr_log, logging.INFO if verbose else logging.DEBUG)
        return cls(process, tail)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def exit_status(self) -> str:
        code = self.process.returncode
        if code is None:
            return "still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"killed by {name}"
        return f"exit status {code}"

    async def wait_exited(self, timeout: float) -> bool:
        """Wait up to `timeout` for the child to exit by itself; True when it has."""
        if self.process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout)
        return self.process.returncode is not None

    async def stop(self, grace: float = STOP_GRACE_SECS) -> None:
        """Close stdin (servers exit on EOF), then SIGTERM the group, then SIGKILL it."""
        with contextlib.suppress(Exception):
            self.stdin.close()
        if not await self.wait_exited(min(grace, 0.5)):
            self._signal_group(signal.SIGTERM)
            if not await self.wait_exited(grace):
                self._signal_group(signal.SIGKILL)
                await self.process.wait()
        else:
            # The leader exited on its own; take any children it left in its group along.
            self._signal_group(signal.SIGKILL)
        await self.stderr.wait(1.0)
        if not self.stderr.task.done():
            self.stderr.task.cancel()

    def kill(self) -> None:
        """SIGKILL the whole group now (a hung or misbehaving server)."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
