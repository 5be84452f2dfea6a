"""The README's demo flow, run as users run it: the real CLI in a subprocess.

Offline it must never call a model; with `use_llm` it must send the reviews to an OpenAI-compatible
endpoint, here a local fake server (never the internet).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "review-digest"
STEPFLOW = Path(sys.executable).parent / "stepflow"


class FakeChatServer:
    """Answers POST /v1/chat/completions with a canned reply and records each request."""

    def __init__(self, reply: str) -> None:
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(
                    {"path": self.path, "auth": self.headers["Authorization"], "body": body}
                )
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeChatServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_llm() -> Iterator[FakeChatServer]:
    with FakeChatServer("- Praise: battery\n- Complaints: login, shipping") as server:
        yield server


def run_demo(*extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    args = [
        str(STEPFLOW),
        "run",
        "--flow",
        str(DEMO / "flow.yaml"),
        "--input",
        str(DEMO / "input.json"),
        "--config",
        str(DEMO / "stepflow-config.yml"),
        *extra,
    ]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.run(
        args, capture_output=True, text=True, env={**clean_env, **(env or {})}, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["outcome"] == "success", result
    return result["result"]  # type: ignore[no-any-return]


def test_demo_runs_offline_without_calling_a_model() -> None:
    result = run_demo()
    reviews = json.loads((DEMO / "reviews.json").read_text())
    assert result["product"] == "Aurora Headphones"
    assert result["reviews_prepared"] == len(reviews)
    assert len(result["archived_blob"]) == 64
    triage = [r["result"] for r in result["triage"]]
    assert [t["review"] for t in triage] == [r["id"] for r in reviews]
    assert [t["messages"][1]["content"] for t in triage] == [r["text"] for r in reviews]
    assert result["digest"].startswith("LLM disabled")


def test_demo_asks_the_model_when_enabled(fake_llm: FakeChatServer) -> None:
    result = run_demo(
        "--variables-json",
        '{"use_llm": true, "model": "local-model"}',
        env={"OPENAI_BASE_URL": fake_llm.url, "OPENAI_API_KEY": "sk-test"},
    )
    assert result["digest"] == "- Praise: battery\n- Complaints: login, shipping"
    [request] = fake_llm.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "local-model"
    assert request["body"]["max_tokens"] == 300
    assert request["body"]["messages"][1]["content"].startswith("Summarise the main praise")
    reviews_text = (DEMO / "reviews.json").read_text()
    assert request["body"]["messages"][-1] == {"role": "user", "content": reviews_text}


def test_openai_endpoint_from_builtin_plugin_config(
    fake_llm: FakeChatServer, tmp_path: Path
) -> None:
    """The builtin plugin's `openai` block beats the environment (which here points nowhere)."""
    (tmp_path / "reviews.json").write_text((DEMO / "reviews.json").read_text())
    config = tmp_path / "stepflow-config.yml"
    config.write_text(
        "plugins:\n"
        "  builtin:\n"
        "    type: builtin\n"
        f"    openai: {{baseUrl: '{fake_llm.url}', apiKeyEnv: DEMO_LLM_KEY}}\n"
        "routes:\n"
        '  "/builtin": [{plugin: builtin}]\n'
    )
    run_demo(
        "--config",
        str(config),
        "--variables-json",
        '{"use_llm": true, "focus": "Only shipping problems."}',
        env={"OPENAI_BASE_URL": "http://127.0.0.1:9/unused", "DEMO_LLM_KEY": "from-env-var"},
    )
    [request] = fake_llm.requests
    assert request["auth"] == "Bearer from-env-var"
    assert request["body"]["model"] == "gpt-4o-mini"  # the flow's variable default
    assert request["body"]["messages"][1] == {"role": "user", "content": "Only shipping problems."}


def test_bad_openai_config_names_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "stepflow-config.yml"
    config.write_text(
        "plugins:\n  builtin: {type: builtin, openai: {baseUrl: 3}}\n"
        'routes:\n  "/builtin": [{plugin: builtin}]\n'
    )
    proc = subprocess.run(
        [str(STEPFLOW), "run", "--flow", str(DEMO / "flow.yaml"), "--config", str(config)],
        input="{}",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"{config}: plugins.builtin.openai.baseUrl: expected a non-empty string" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_node_demo_runs_through_a_node_and_a_stepflow_py_worker() -> None:
    """`make demo`: starts a node, submits the review-scores flow, stops the node."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "node_demo.py")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["outcome"] == "success"
    scores = [r["result"]["score"] for r in result["result"]["scores"]]
    assert scores == [1, -0.9, 0.5, -1]
    assert len(result["result"]["archive_blob"]) == 64
    assert "node stopped" in proc.stderr
    assert "Reconnecting" not in proc.stderr  # the worker leaves with the node, without a warning
