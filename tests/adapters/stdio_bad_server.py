"""Misbehaving stdio component servers for tests/adapters/test_stdio.py.

Usage: python stdio_bad_server.py MODE [STARTS_FILE]

Every start appends a line to STARTS_FILE (when given), so tests can count restarts. Modes:
- `die`: writes a reason to stderr and exits with status 3 before answering anything.
- `garbage`: handshakes normally (slash dialect), then answers any execute with a non-JSON line.
- `hang`: handshakes normally; `/hang` never answers, `/echo` answers at once.
- `v2`: claims protocol version 2 (camelCase `serverProtocolVersion`, as some servers spell it).
"""

from __future__ import annotations

import json
import sys

MODE = sys.argv[1]
if len(sys.argv) > 2:
    with open(sys.argv[2], "a") as f:
        f.write(f"{MODE}\n")

if MODE == "die":
    sys.stderr.write("fatal: cannot load the model weights\n")
    sys.exit(3)


def reply(request_id: object, result: object) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    method = message.get("method")
    if "id" not in message:
        continue
    if method == "initialize" and MODE == "v2":
        reply(message["id"], {"serverProtocolVersion": 2})
    elif method == "initialize":
        reply(message["id"], {"server_protocol_version": 1})
    elif method == "components/list":
        reply(message["id"], {"components": [{"component": "/hang"}, {"component": "/echo"}]})
    elif method == "components/execute":
        if MODE == "garbage":
            sys.stderr.write("about to write garbage\n")
            sys.stderr.flush()
            sys.stdout.write("this is not JSON\n")
            sys.stdout.flush()
        elif message["params"]["component"] == "/echo":
            reply(message["id"], {"output": message["params"]["input"]})
        # `/hang`: never answer
