"""The crash-test scenario: a flow with parallel steps, a retried step, `map` and nested `eval`."""

from __future__ import annotations

import json
from pathlib import Path

FLOW = """
name: crash-suite
steps:
  - id: a
    component: /test/record
    input: {name: a, value: {$input: x}}
  - id: b
    component: /test/record
    input: {name: b, value: 2, fail_attempts: 1}
    onError: {action: retry, maxRetries: 3}
  - id: fan
    component: /builtin/map
    input:
      max_concurrency: 2
      items:
        - {$step: a, path: value}
        - {$step: b, path: value}
        - 30
      workflow:
        $literal:
          steps:
            - id: m
              component: /test/record
              input: {name: m, value: {$input: "$"}}
          output: {$step: m, path: value}
  - id: stored
    component: /builtin/put_blob
    input:
      blob_type: flow
      data:
        $literal:
          steps:
            - id: inner
              component: /test/record
              input: {name: inner, value: {$input: v}}
          output: {$step: inner, path: value}
  - id: nested
    component: /builtin/eval
    input:
      flow_id: {$step: stored, path: blob_id}
      input: {v: {$step: fan, path: successful}}
  - id: last
    component: /test/record
    input:
      name: last
      value:
        fan: {$step: fan, path: results}
        nested: {$step: nested, path: result}
output: {$step: last, path: value}
"""

INPUTS = [{"x": 1}, {"x": 10}]


def write_scenario(directory: Path) -> dict[str, Path]:
    """Flow, config (recorder logging to `executions.jsonl`), JSONL inputs."""
    paths = {
        "flow": directory / "flow.yaml",
        "config": directory / "stepflow-config.yml",
        "inputs": directory / "inputs.jsonl",
        "log": directory / "executions.jsonl",
        "state": directory / "state",
    }
    paths["flow"].write_text(FLOW)
    paths["inputs"].write_text("".join(json.dumps(i) + "\n" for i in INPUTS))
    paths["config"].write_text(
        "plugins:\n"
        "  builtin: {type: builtin}\n"
        f"  test: {{type: recorder, log: '{paths['log']}'}}\n"
        "routes:\n"
        '  "/builtin": [{plugin: builtin}]\n'
        '  "/test": [{plugin: test}]\n'
        "retry:\n"
        "  backoff: {type: constant, delayMs: 1}\n"
    )
    return paths
