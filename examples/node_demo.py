"""`make demo`: start a node, submit the review-scores flow to it, print the result, stop it.

The flow uses builtins and Python components served by a stepflow-py worker that the node starts
(examples/python-worker). Everything runs on this machine; nothing touches the network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def main() -> int:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    workdir = HERE / "python-worker"
    with tempfile.TemporaryDirectory() as state:
        node = subprocess.Popen(
            [str(BIN / "stepflow"), "--log-level", "warning", "serve", "--port", "0",
             "--state-dir", state],
            cwd=workdir, env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert node.stdout is not None
            ports = json.loads(node.stdout.readline())
            url = f"127.0.0.1:{ports['port']}"
            print(f"node up: gRPC {url}, REST http://127.0.0.1:{ports.get('httpPort')}/api/v1",
                  file=sys.stderr)  # fmt: skip
            submitted = subprocess.run(
                [str(BIN / "stepflow"), "submit", "--url", url, "--flow", "flow.yaml",
                 "--input", "input.json"],
                cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            sys.stderr.write(submitted.stderr)
            if submitted.returncode != 0:
                return submitted.returncode
            print(json.dumps(json.loads(submitted.stdout), indent=2))
            return 0
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=60)
            print("node stopped", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
