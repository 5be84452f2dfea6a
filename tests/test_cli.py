"""The `stepflow` command as a user runs it: a real subprocess in a temporary directory.

Covers `run` (every input, variable, override and output form; exit codes; error reporting),
`validate`, `list-components` and `test` (flows.md §10, §11).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

STEPFLOW = Path(sys.executable).parent / "stepflow"
COMPONENT_ORDER = [
    "/create_messages",
    "/eval",
    "/get_blob",
    "/iterate",
    "/load_file",
    "/map",
    "/noop",
    "/openai",
    "/put_blob",
    "/sleep",
]
SCHEMA_HEADER = "schema: https://stepflow.org/schemas/v1/flow.json\n"


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    def error_line(self) -> str:
        """The one `Error: ...` line of a failed command (and no traceback anywhere)."""
        assert self.code == 1, (self.code, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr and "Traceback" not in self.stdout, self.stderr
        errors = [line for line in self.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, self.stderr
        return errors[0]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without stepflow/OpenAI settings or proxies, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STEPFLOW_", "OPENAI_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(extra)
    return env


def stepflow(
    *args: str | Path, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> Done:
    proc = subprocess.run(
        [str(STEPFLOW), *map(str, args)],
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        timeout=120,
    )
    return Done(proc.returncode, proc.stdout, proc.stderr)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MESSAGES_FLOW = """\
name: messages
description: Builds a chat message list.
steps:
  - id: build
    component: /builtin/create_messages
    input:
      user_prompt: {$input: prompt}
      # A missing `system` makes the condition fail, which counts as false: null.
      system_instructions: {$if: {$input: system}, then: {$input: system}}
output:
  messages: {$step: build, path: messages}
  count: 1
"""


def messages_result(prompt: str, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": prompt})
    return {"outcome": "success", "result": {"messages": messages, "count": 1}}


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write(tmp_path / "flow.yaml", MESSAGES_FLOW)


def success(done: Done) -> Any:
    assert done.code == 0, done.stderr
    return done.json


# -- run: input forms --------------------------------------------------------------------------


def test_run_input_json_prints_compact_result(flow: Path, tmp_path: Path) -> None:
    done = stepflow(
        "run",
        "--flow",
        flow,
        "--input-json",
        '{"prompt": "hi", "system": "Be brief."}',
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    expected = messages_result("hi", "Be brief.")
    assert done.stdout == json.dumps(expected, separators=(",", ":"))  # compact, no newline
    assert re.search(r"^run_id: [0-9a-f]{32}$", done.stderr, re.MULTILINE), done.stderr


def test_run_input_file_json(flow: Path, tmp_path: Path) -> None:
    write(tmp_path / "in.json", '{"prompt": "from json", "system": null}')
    done = stepflow("run", "--flow", flow, "--input", "in.json", cwd=tmp_path)
    assert success(done) == messages_result("from json")


def test_run_input_file_yaml_uses_yaml_12(flow: Path, tmp_path: Path) -> None:
    # `yes`/`on` are strings in YAML 1.2, not booleans.
    write(tmp_path / "in.yml", "prompt: yes\nsystem: on\n")
    done = stepflow("run", "--flow", flow, "--input", "in.yml", cwd=tmp_path)
    assert success(done) == messages_result("yes", "on")


def test_run_input_yaml_inline(flow: Path, tmp_path: Path) -> None:
    done = stepflow("run", "--flow", flow, "--input-yaml", "{prompt: inline}", cwd=tmp_path)
    assert success(done) == messages_result("inline")


def test_run_reads_json_from_stdin_by_default(flow: Path, tmp_path: Path) -> None:
    done = stepflow("run", "--flow", flow, cwd=tmp_path, stdin='{"prompt": "piped"}')
    assert success(done) == messages_result("piped")


def test_run_reads_yaml_from_stdin(flow: Path, tmp_path: Path) -> None:
    done = stepflow(
        "run",
        "--flow",
        flow,
        "--stdin-format",
        "yaml",
        cwd=tmp_path,
        stdin="prompt: piped yaml\nsystem: sys\n",
    )
    assert success(done) == messages_result("piped yaml", "sys")


def test_run_input_flags_are_mutually_exclusive(flow: Path, tmp_path: Path) -> None:
    done = stepflow("run", "--flow", flow, "--input-json", "{}", "--input-yaml", "{}", cwd=tmp_path)
    assert done.code == 2
    assert "mutually exclusive" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_batch_inputs_jsonl(flow: Path, tmp_path: Path) -> None:
    write(
        tmp_path / "batch.jsonl",
        '{"prompt": "one"}\n\n{"prompt": 2}\n{"prompt": "three", "system": "s"}\n',
    )
    done = stepflow("run", "--flow", flow, "--inputs", "batch.jsonl", cwd=tmp_path)
    # A failing item does not fail a batch.
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert done.stdout.endswith("\n")
    assert [json.loads(line) for line in lines] == [
        messages_result("one"),
        {
            "outcome": "failed",
            "error": {
                "code": "INVALID_INPUT",
                "message": "create_messages: field 'user_prompt' must be string, got integer",
            },
        },
        messages_result("three", "s"),
    ]
    assert "Running batch with 3 inputs" in done.stderr
    assert "Batch execution completed with 3 results" in done.stderr


def test_run_batch_to_output_file(flow: Path, tmp_path: Path) -> None:
    write(tmp_path / "batch.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n')
    done = stepflow(
        "run", "--flow", flow, "--inputs", "batch.jsonl", "--output", "out.jsonl", cwd=tmp_path
    )
    assert done.code == 0, done.stderr
    assert done.stdout == ""
    assert 'Batch execution completed with 2 results. Results written to "out.jsonl"' in (
        done.stderr
    )
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [messages_result("a"), messages_result("b")]


def test_run_batch_bad_line_names_file_and_line(flow: Path, tmp_path: Path) -> None:
    write(tmp_path / "batch.jsonl", '{"prompt": "a"}\n{"prompt": \n')
    line = stepflow("run", "--flow", flow, "--inputs", "batch.jsonl", cwd=tmp_path).error_line()
    assert "batch.jsonl" in line
    assert "Failed to parse input at line 2" in line


# -- run: output -------------------------------------------------------------------------------


def test_run_output_json_file(flow: Path, tmp_path: Path) -> None:
    done = stepflow(
        "run", "--flow", flow, "--input-json", '{"prompt": "x"}', "--output", "r.json", cwd=tmp_path
    )
    assert done.code == 0, done.stderr
    assert done.stdout == ""
    text = (tmp_path / "r.json").read_text()
    assert text == json.dumps(messages_result("x"), separators=(",", ":"))


def test_run_output_yaml_file(flow: Path, tmp_path: Path) -> None:
    done = stepflow(
        "run", "--flow", flow, "--input-json", '{"prompt": "x"}', "--output", "r.yaml", cwd=tmp_path
    )
    assert done.code == 0, done.stderr
    text = (tmp_path / "r.yaml").read_text()
    assert text.startswith("outcome: success\nresult:\n")
    assert yaml.safe_load(text) == messages_result("x")


def test_run_output_unsupported_extension(flow: Path, tmp_path: Path) -> None:
    done = stepflow(
        "run", "--flow", flow, "--input-json", '{"prompt": "x"}', "--output", "r.txt", cwd=tmp_path
    )
    line = done.error_line()
    assert "r.txt" in line
    assert "Unsupported output extension '.txt'" in line
    assert not (tmp_path / "r.txt").exists()


def test_run_output_unwritable(flow: Path, tmp_path: Path) -> None:
    done = stepflow(
        "run",
        "--flow",
        flow,
        "--input-json",
        '{"prompt": "x"}',
        "--output",
        "no/such/dir/r.json",
        cwd=tmp_path,
    )
    line = done.error_line()
    assert "no/such/dir/r.json" in line
    assert "cannot write output" in line


# -- run: exit codes ---------------------------------------------------------------------------


def test_run_failed_outcome_exits_1_with_result(flow: Path, tmp_path: Path) -> None:
    done = stepflow("run", "--flow", flow, "--input-json", '{"system": "s"}', cwd=tmp_path)
    assert done.code == 1
    assert done.json == {
        "outcome": "failed",
        "error": {"code": "EXPRESSION_FAILURE", "message": "Input path $.prompt not found"},
    }
    assert "Traceback" not in done.stderr


def test_run_uses_config_from_flow_directory(tmp_path: Path) -> None:
    # The flow's directory config routes `/tools/...` to the builtins; the CWD is elsewhere.
    project = tmp_path / "project"
    write(
        project / "stepflow-config.yml",
        'plugins:\n  b: {type: builtin}\nroutes:\n  "/tools": [{plugin: b}]\n',
    )
    write(
        project / "flow.yaml",
        "steps:\n  - id: n\n    component: /tools/noop\n    input: {$input: $}\n"
        "output: {$step: n}\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = stepflow("run", "--flow", project / "flow.yaml", "--input-json", "[1]", cwd=elsewhere)
    assert success(done) == {"outcome": "success", "result": [1]}


def test_run_load_file_resolves_against_config_directory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(
        project / "stepflow-config.yml",
        'plugins:\n  builtin: {type: builtin}\nroutes:\n  "/builtin": [{plugin: builtin}]\n',
    )
    write(project / "data" / "facts.yaml", "answer: 42\nflag: no\n")
    flows = tmp_path / "flows"
    write(
        flows / "load.yaml",
        "steps:\n  - id: load\n    component: /builtin/load_file\n"
        "    input: {path: {$input: file}}\n"
        "output: {$step: load, path: data}\n",
    )
    done = stepflow(
        "run",
        "--flow",
        flows / "load.yaml",
        "--config",
        project / "stepflow-config.yml",
        "--input-json",
        '{"file": "data/facts.yaml"}',
        cwd=tmp_path,
    )
    assert success(done) == {"outcome": "success", "result": {"answer": 42, "flag": "no"}}


# -- run: variables and overrides --------------------------------------------------------------

VARIABLES_FLOW = """\
name: vars
description: Reads variables.
schemas:
  type: object
  properties:
    variables:
      type: object
      properties:
        greeting: {type: string}
        token: {type: string, is_secret: true, env_var: MY_TOKEN}
        count: {type: integer}
      required: [greeting]
steps:
  - id: echo
    component: /builtin/noop
    input:
      greeting: {$variable: greeting, default: none given}
      token: {$variable: token}
      count: {$variable: count}
output: {$step: echo}
"""


@pytest.fixture
def vars_flow(tmp_path: Path) -> Path:
    return write(tmp_path / "vars.yaml", VARIABLES_FLOW)


def test_run_variables_defaults(vars_flow: Path, tmp_path: Path) -> None:
    done = stepflow("run", "--flow", vars_flow, "--input-json", "{}", cwd=tmp_path)
    assert success(done)["result"] == {"greeting": "none given", "token": "", "count": 0}


@pytest.mark.parametrize(
    "flag",
    [
        ("--variables-json", '{"greeting": "hello", "count": 3}'),
        ("--variables-yaml", "{greeting: hello, count: 3}"),
        ("--variables", "vars.json"),
        ("--variables", "vars.yml"),
    ],
)
def test_run_variables_forms(flag: tuple[str, str], vars_flow: Path, tmp_path: Path) -> None:
    write(tmp_path / "vars.json", '{"greeting": "hello", "count": 3}')
    write(tmp_path / "vars.yml", "greeting: hello\ncount: 3\n")
    done = stepflow("run", "--flow", vars_flow, "--input-json", "{}", *flag, cwd=tmp_path)
    assert success(done)["result"] == {"greeting": "hello", "token": "", "count": 3}


def test_run_env_variables(vars_flow: Path, tmp_path: Path) -> None:
    env = clean_env(STEPFLOW_VAR_GREETING="plain text", STEPFLOW_VAR_COUNT="7", MY_TOKEN="s3")
    done = stepflow(
        "run", "--flow", vars_flow, "--input-json", "{}", "--env-variables", cwd=tmp_path, env=env
    )
    assert success(done)["result"] == {"greeting": "plain text", "token": "s3", "count": 7}
    # Supplied variables win over the environment; without the flag the env is ignored.
    done = stepflow(
        "run",
        "--flow",
        vars_flow,
        "--input-json",
        "{}",
        "--env-variables",
        "--variables-json",
        '{"count": 1}',
        cwd=tmp_path,
        env=env,
    )
    assert success(done)["result"] == {"greeting": "plain text", "token": "s3", "count": 1}
    done = stepflow("run", "--flow", vars_flow, "--input-json", "{}", cwd=tmp_path, env=env)
    assert success(done)["result"] == {"greeting": "none given", "token": "", "count": 0}


def test_run_variables_must_be_an_object(vars_flow: Path, tmp_path: Path) -> None:
    line = stepflow(
        "run", "--flow", vars_flow, "--input-json", "{}", "--variables-json", "[1]", cwd=tmp_path
    ).error_line()
    assert "--variables-json" in line
    assert "variables must be an object" in line


@pytest.mark.parametrize(
    "flag",
    [
        ("--overrides-json", '{"steps": {"build": {"value": {"input": {"user_prompt": "O"}}}}}'),
        ("--overrides-yaml", "{steps: {build: {value: {input: {user_prompt: O}}}}}"),
        ("--overrides", "over.yaml"),
    ],
)
def test_run_overrides_forms(flag: tuple[str, str], flow: Path, tmp_path: Path) -> None:
    write(
        tmp_path / "over.yaml",
        "steps:\n  build:\n    $type: merge_patch\n    value:\n      input:\n"
        "        user_prompt: O\n",
    )
    done = stepflow("run", "--flow", flow, "--input-json", '{"prompt": "p"}', *flag, cwd=tmp_path)
    assert success(done) == messages_result("O")


def test_run_override_can_replace_component(flow: Path, tmp_path: Path) -> None:
    override = {"steps": {"build": {"value": {"component": "/builtin/noop", "input": None}}}}
    done = stepflow(
        "run",
        "--flow",
        flow,
        "--input-json",
        "{}",
        "--overrides-json",
        json.dumps(override),
        cwd=tmp_path,
    )
    # noop echoes the (now absent) input: null; a step that succeeded with null gives null
    # even through a path (flows.md §5.3).
    assert success(done) == {"outcome": "success", "result": {"messages": None, "count": 1}}


def test_run_override_unknown_step_names_the_step(flow: Path, tmp_path: Path) -> None:
    write(tmp_path / "over.json", '{"steps": {"ghost": {"value": {"input": 1}}}}')
    line = stepflow(
        "run", "--flow", flow, "--input-json", "{}", "--overrides", "over.json", cwd=tmp_path
    ).error_line()
    assert "steps.ghost: Step 'ghost' not found in workflow" in line


def test_run_override_json_patch_is_rejected(flow: Path, tmp_path: Path) -> None:
    override = '{"steps": {"build": {"$type": "json_patch", "value": {}}}}'
    line = stepflow(
        "run", "--flow", flow, "--input-json", "{}", "--overrides-json", override, cwd=tmp_path
    ).error_line()
    assert "steps.build: override type 'json_patch' is not supported" in line


# -- run: bad input ----------------------------------------------------------------------------


def test_missing_flow_file(tmp_path: Path) -> None:
    line = stepflow("run", "--flow", "nope.yaml", "--input-json", "{}", cwd=tmp_path).error_line()
    assert line == "Error: Missing file: nope.yaml"


def test_unrecognized_flow_extension(tmp_path: Path) -> None:
    write(tmp_path / "flow.txt", "steps: []\n")
    line = stepflow("run", "--flow", "flow.txt", "--input-json", "{}", cwd=tmp_path).error_line()
    assert line == "Error: Unrecognized file extension: flow.txt"


def test_malformed_yaml_flow_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", "name: broken\nsteps: [\n  - id: a\n")
    line = stepflow("run", "--flow", "bad.yaml", "--input-json", "{}", cwd=tmp_path).error_line()
    assert re.match(r"Error: bad\.yaml:\d+:\d+: ", line), line


def test_malformed_json_flow_names_file(tmp_path: Path) -> None:
    write(tmp_path / "bad.json", '{"steps": [}')
    line = stepflow("run", "--flow", "bad.json", "--input-json", "{}", cwd=tmp_path).error_line()
    assert line.startswith("Error: bad.json: invalid JSON at line 1, column 12")


def test_duplicate_key_in_flow(tmp_path: Path) -> None:
    write(tmp_path / "dup.yaml", "name: a\nname: b\nsteps: []\n")
    line = stepflow("run", "--flow", "dup.yaml", "--input-json", "{}", cwd=tmp_path).error_line()
    assert "dup.yaml:2" in line
    assert "duplicate key 'name'" in line


def test_malformed_inline_json_input(flow: Path, tmp_path: Path) -> None:
    line = stepflow("run", "--flow", flow, "--input-json", "{bad", cwd=tmp_path).error_line()
    assert line.startswith("Error: --input-json: invalid JSON at line 1, column 2")


def test_malformed_json_input_file(flow: Path, tmp_path: Path) -> None:
    write(tmp_path / "in.json", '{"prompt": }')
    line = stepflow("run", "--flow", flow, "--input", "in.json", cwd=tmp_path).error_line()
    assert line.startswith("Error: in.json: invalid JSON at line 1, column 12")


def test_malformed_yaml_input(flow: Path, tmp_path: Path) -> None:
    line = stepflow("run", "--flow", flow, "--input-yaml", "a: [1", cwd=tmp_path).error_line()
    assert line.startswith("Error: --input-yaml:")


def test_malformed_stdin_input(flow: Path, tmp_path: Path) -> None:
    line = stepflow("run", "--flow", flow, cwd=tmp_path, stdin="not json").error_line()
    assert line.startswith("Error: stdin: invalid JSON")


def test_missing_input_file(flow: Path, tmp_path: Path) -> None:
    line = stepflow("run", "--flow", flow, "--input", "in.json", cwd=tmp_path).error_line()
    assert line == "Error: Missing file: in.json"


def test_unknown_flow_fields_are_ignored_by_run(tmp_path: Path) -> None:
    write(
        tmp_path / "extra.yaml",
        "name: x\nbogusTop: 1\nsteps:\n  - id: a\n    component: /builtin/noop\n"
        "    input: {$input: $}\n    timeout: 5\noutput: {$step: a}\n",
    )
    done = stepflow("run", "--flow", "extra.yaml", "--input-json", '"v"', cwd=tmp_path)
    assert success(done) == {"outcome": "success", "result": "v"}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("steps: 5\n", ["bad.yaml: steps", "expected a list of steps"]),
        (
            "steps:\n  - id: a\n    component: /builtin/noop\n    mustExecute: maybe\n",
            ["bad.yaml: steps[0] (step 'a').mustExecute", "true or false"],
        ),
        (
            "steps:\n  - id: a\n    component: /builtin/noop\n    onError: {action: explode}\n",
            ["bad.yaml: steps[0] (step 'a').onError.action", "unknown action 'explode'"],
        ),
        (
            "steps:\n  - component: /builtin/noop\n",
            ["bad.yaml: steps[0].id", "'id'"],
        ),
        (
            "schemas: {input: {type: object}}\n",
            ["bad.yaml: schemas.input", "schemas.properties"],
        ),
    ],
)
def test_wrongly_typed_flow_field_names_file_and_field(
    text: str, fragments: list[str], tmp_path: Path
) -> None:
    write(tmp_path / "bad.yaml", text)
    line = stepflow("run", "--flow", "bad.yaml", "--input-json", "{}", cwd=tmp_path).error_line()
    for fragment in fragments:
        assert fragment in line


@pytest.mark.parametrize(
    ("expr", "fragments"),
    [
        ("{$input: '$.a['}", ["steps[0] (step 'a').input.$input", "Unclosed bracket"]),
        ("{$input: '$x'}", ["steps[0] (step 'a').input.$input", "Invalid character 'x'"]),
        ("{$from: {workflow: input}}", ["steps[0] (step 'a').input", "'$from' is not supported"]),
        ("{$step: 5}", ["steps[0] (step 'a').input", "'$step' must be a step id string"]),
        ("{$if: true}", ["steps[0] (step 'a').input", "then"]),
    ],
)
def test_bad_expression_names_file_step_and_field(
    expr: str, fragments: list[str], tmp_path: Path
) -> None:
    write(
        tmp_path / "bad.yaml",
        f"steps:\n  - id: a\n    component: /builtin/noop\n    input: {expr}\n"
        "output: {$step: a}\n",
    )
    line = stepflow("run", "--flow", "bad.yaml", "--input-json", "{}", cwd=tmp_path).error_line()
    assert line.startswith("Error: bad.yaml: ")
    for fragment in fragments:
        assert fragment in line


def test_unknown_component_fails_validation_before_running(tmp_path: Path) -> None:
    write(
        tmp_path / "unk.yaml",
        "steps:\n  - id: mystery\n    component: /builtin/nope\noutput: {$step: mystery}\n",
    )
    done = stepflow("run", "--flow", "unk.yaml", "--input-json", "{}", cwd=tmp_path)
    line = done.error_line()
    assert line == "Error: unk.yaml: validation failed"
    assert done.stdout == ""
    assert "Unknown component '/builtin/nope' in step 'mystery'" in done.stderr
    assert "($.steps[0].component)" in done.stderr
    assert "run_id" not in done.stderr


def test_unrouted_prefix_fails_validation(tmp_path: Path) -> None:
    write(
        tmp_path / "unk.yaml", "steps:\n  - id: s\n    component: /python/x\noutput: {$step: s}\n"
    )
    done = stepflow("run", "--flow", "unk.yaml", "--input-json", "{}", cwd=tmp_path)
    assert done.error_line() == "Error: unk.yaml: validation failed"
    assert "Unknown component '/python/x' in step 's'" in done.stderr


def test_missing_config_file(flow: Path, tmp_path: Path) -> None:
    line = stepflow(
        "run", "--flow", flow, "--input-json", "{}", "--config", "cfg.yml", cwd=tmp_path
    ).error_line()
    assert line == "Error: Missing file: cfg.yml"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("plugins: [\n", ["cfg.yml:"]),
        ("plugins: {}\n", ["cfg.yml: routes", "'routes' is required"]),
        (
            "plugins: {b: {type: builtin}}\nroutes: {'/a/b': [{plugin: b}]}\n",
            ["cfg.yml: routes./a/b", "Invalid prefix '/a/b'"],
        ),
        (
            "plugins: {b: {type: nats}}\nroutes: {'/': [{plugin: b}]}\n",
            ["cfg.yml: plugins.b.type", "plugin type 'nats' is not supported"],
        ),
    ],
)
def test_bad_config_names_file_and_field(
    text: str, fragments: list[str], flow: Path, tmp_path: Path
) -> None:
    write(tmp_path / "cfg.yml", text)
    line = stepflow(
        "run",
        "--flow",
        flow,
        "--input-json",
        '{"prompt": "x"}',
        "--config",
        "cfg.yml",
        cwd=tmp_path,
    ).error_line()
    for fragment in fragments:
        assert fragment in line


def test_usage_errors_exit_2(flow: Path, tmp_path: Path) -> None:
    assert stepflow(cwd=tmp_path).code == 2
    done = stepflow("run", "--flow", flow, "--bogus", cwd=tmp_path)
    assert done.code == 2
    assert "No such option" in done.stderr
    assert stepflow("run", cwd=tmp_path).code == 2  # --flow is required


def test_version(tmp_path: Path) -> None:
    done = stepflow("-V", cwd=tmp_path)
    assert done.code == 0
    assert done.stdout.strip() == "stepflow, version 0.1.0"


def test_debug_shows_traceback(tmp_path: Path) -> None:
    done = stepflow("--debug", "run", "--flow", "nope.yaml", "--input-json", "{}", cwd=tmp_path)
    assert done.code == 1
    assert "Traceback" in done.stderr
    assert "Missing file: nope.yaml" in done.stderr


def test_log_file_implies_file_destination_and_off_silences(flow: Path, tmp_path: Path) -> None:
    """durability.md §14: `--log-file` implies `file`; `off` is a level."""
    warning = "traces and metrics need --otlp-endpoint"  # logged by `--trace-enabled` alone
    run = ("run", "--flow", flow, "--input-json", '{"prompt": "hi"}')
    done = stepflow("--trace-enabled", "--log-file", tmp_path / "node.log", *run, cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert warning in (tmp_path / "node.log").read_text()
    assert warning not in done.stderr
    loud = stepflow("--trace-enabled", *run, cwd=tmp_path)
    assert loud.code == 0 and warning in loud.stderr
    quiet = stepflow("--log-level", "off", "--trace-enabled", *run, cwd=tmp_path)
    assert quiet.code == 0 and warning not in quiet.stderr
    bad = stepflow("--log-level", "loud", *run, cwd=tmp_path)
    assert "unknown log level 'loud' (use off, error, warn, info, debug, trace)" in bad.error_line()


# -- run: openai against a fake server --------------------------------------------------------


@pytest.fixture
def fake_openai() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A fake chat-completions endpoint on 127.0.0.1: (base URL, recorded requests)."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers["Authorization"], "body": body})
            if self.headers["Authorization"] != "Bearer sk-test":
                status, reply = 401, {"error": {"message": "Invalid API key"}}
            else:
                content = f"echo: {body['messages'][-1]['content']}"
                status, reply = 200, {"choices": [{"message": {"content": content}}]}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


CHAT_FLOW = """\
name: chat
description: Asks the model.
steps:
  - id: msgs
    component: /builtin/create_messages
    input: {user_prompt: {$input: q}}
  - id: llm
    component: /builtin/openai
    input: {messages: {$step: msgs, path: messages}, model: test-model}
output: {$step: llm, path: response}
"""


def test_run_openai_flow_with_env_endpoint(
    fake_openai: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    base_url, seen = fake_openai
    write(tmp_path / "chat.yaml", CHAT_FLOW)
    env = clean_env(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-test")
    done = stepflow(
        "run", "--flow", "chat.yaml", "--input-json", '{"q": "ping"}', cwd=tmp_path, env=env
    )
    assert success(done) == {"outcome": "success", "result": "echo: ping"}
    assert seen == [
        {
            "path": "/v1/chat/completions",
            "auth": "Bearer sk-test",
            "body": {"model": "test-model", "messages": [{"role": "user", "content": "ping"}]},
        }
    ]


def test_run_openai_flow_with_config_endpoint_and_http_error(
    fake_openai: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    base_url, seen = fake_openai
    write(tmp_path / "chat.yaml", CHAT_FLOW)
    write(
        tmp_path / "stepflow-config.yml",
        "plugins:\n  builtin:\n    type: builtin\n"
        f"    openai: {{baseUrl: '{base_url}', apiKeyEnv: CHAT_KEY}}\n"
        'routes:\n  "/builtin": [{plugin: builtin}]\n',
    )
    ok = stepflow(
        "run",
        "--flow",
        "chat.yaml",
        "--input-json",
        '{"q": "hello"}',
        cwd=tmp_path,
        env=clean_env(CHAT_KEY="sk-test"),
    )
    assert success(ok) == {"outcome": "success", "result": "echo: hello"}
    bad = stepflow(
        "run",
        "--flow",
        "chat.yaml",
        "--input-json",
        '{"q": "hello"}',
        cwd=tmp_path,
        env=clean_env(CHAT_KEY="sk-wrong"),
    )
    assert bad.code == 1
    assert "Traceback" not in bad.stderr
    url = f"{base_url}/chat/completions"
    assert bad.json == {
        "outcome": "failed",
        "error": {
            "code": "COMPONENT_FAILED",
            "message": f'openai: {url} answered 401: {{"error": {{"message": "Invalid API key"}}}}',
        },
    }
    assert [r["auth"] for r in seen] == ["Bearer sk-test", "Bearer sk-wrong"]


# -- validate ----------------------------------------------------------------------------------


def validate(tmp_path: Path, text: str) -> Done:
    write(tmp_path / "v.yaml", text)
    return stepflow("validate", "--flow", "v.yaml", cwd=tmp_path)


def test_validate_valid_flow(flow: Path, tmp_path: Path) -> None:
    done = stepflow("validate", "--flow", flow, cwd=tmp_path)
    assert done.code == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "✅ Validation passed with no errors"


def test_validate_warnings_only_exit_0(tmp_path: Path) -> None:
    done = validate(
        tmp_path,
        "steps:\n  - id: a\n    component: /builtin/noop\n    bogus: 1\n"
        "  - id: unused\n    component: /builtin/noop\noutput: {$step: a}\n",
    )
    assert done.code == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "📊 Validation results: 0 fatal, 0 errors, 4 warnings"
    assert lines[1] == "⚠️  Warnings:"
    assert "  WARNING Workflow has no name ($.name)" in lines
    assert "  WARNING Workflow has no description ($.description)" in lines
    assert any("Unknown field 'bogus' ignored in steps[0]" in line for line in lines)
    assert "  WARNING Step 'unused' is not reachable from the output ($.steps[1])" in lines


HEADER = "name: n\ndescription: d\n"


def test_validate_forward_reference(tmp_path: Path) -> None:
    done = validate(
        tmp_path,
        HEADER + "steps:\n  - id: a\n    component: /builtin/noop\n    input: {$step: b}\n"
        "  - id: b\n    component: /builtin/noop\noutput: {$step: a}\n",
    )
    assert done.code == 1
    assert "🚨 Fatal Issues:" in done.stdout
    assert "  FATAL Step 'a' references undefined step 'b' ($.steps[0].input)" in done.stdout


def test_validate_cycle(tmp_path: Path) -> None:
    done = validate(
        tmp_path,
        HEADER + "steps:\n  - id: a\n    component: /builtin/noop\n    input: {x: {$step: b}}\n"
        "  - id: b\n    component: /builtin/noop\n    input: {$step: a}\noutput: {$step: b}\n",
    )
    assert done.code == 1
    assert done.stdout.startswith("📊 Validation results: 1 fatal, 0 errors, 0 warnings")
    assert "Step 'a' references undefined step 'b'" in done.stdout


def test_validate_unknown_and_self_references(tmp_path: Path) -> None:
    done = validate(
        tmp_path,
        HEADER + "steps:\n  - id: a\n    component: /builtin/noop\n    input: {$step: ghost}\n"
        "  - id: s\n    component: /builtin/noop\n    input: [{$step: a}, {$step: s}]\n"
        "output: {$step: zz}\n",
    )
    assert done.code == 1
    assert "  FATAL Step 'a' references undefined step 'ghost' ($.steps[0].input)" in done.stdout
    assert "  FATAL Step 's' references itself ($.steps[1].input)" in done.stdout
    assert "  FATAL Output references undefined step 'zz' ($.output)" in done.stdout


def test_validate_duplicate_step_id(tmp_path: Path) -> None:
    done = validate(
        tmp_path,
        HEADER + "steps:\n  - id: a\n    component: /builtin/noop\n"
        "  - id: a\n    component: /builtin/noop\noutput: {$step: a}\n",
    )
    assert done.code == 1
    assert "  FATAL Duplicate step ID 'a' ($.steps[1].id)" in done.stdout


def test_validate_unknown_component(tmp_path: Path) -> None:
    done = validate(
        tmp_path, HEADER + "steps:\n  - id: a\n    component: /builtin/nope\noutput: {$step: a}\n"
    )
    assert done.code == 1
    assert "❌ Errors:" in done.stdout
    assert "Unknown component '/builtin/nope' in step 'a'" in done.stdout


def test_validate_component_without_slash(tmp_path: Path) -> None:
    done = validate(
        tmp_path, HEADER + "steps:\n  - id: a\n    component: noop\noutput: {$step: a}\n"
    )
    assert done.code == 1
    assert (
        "  ERROR Invalid component 'noop' in step 'a': Component path must start with '/' "
        "($.steps[0].component)"
    ) in done.stdout


def test_validate_bad_path_is_a_load_error(tmp_path: Path) -> None:
    done = validate(
        tmp_path,
        HEADER + "steps:\n  - id: a\n    component: /builtin/noop\n"
        "    input: {$step: a0, path: '$.x[abc]'}\noutput: {$step: a}\n",
    )
    line = done.error_line()
    assert line.startswith("Error: v.yaml: steps[0] (step 'a').input")
    assert "Invalid index 'abc'" in line


def test_validate_undefined_variable(tmp_path: Path) -> None:
    done = validate(
        tmp_path,
        HEADER + "schemas:\n  type: object\n  properties:\n    variables:\n"
        "      type: object\n      properties: {known: {type: string}}\n"
        "steps:\n  - id: a\n    component: /builtin/noop\n    input: {$variable: other}\n"
        "output: {$step: a}\n",
    )
    assert done.code == 1
    assert "Variable 'other' is not defined in step 'a'" in done.stdout


def test_validate_missing_flow(tmp_path: Path) -> None:
    line = stepflow("validate", "--flow", "nope.yaml", cwd=tmp_path).error_line()
    assert line == "Error: Missing file: nope.yaml"


# -- list-components ---------------------------------------------------------------------------


def test_list_components_pretty(tmp_path: Path) -> None:
    done = stepflow("list-components", cwd=tmp_path)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["Available Components:", "====================", ""]
    components = [line for line in lines if line.startswith("Component: ")]
    assert components == [f"Component: {c} (plugin: builtin)" for c in COMPONENT_ORDER]
    first = lines.index("Component: /create_messages (plugin: builtin)")
    assert lines[first + 1].startswith("  Description: ")
    assert lines[first + 2 : first + 4] == [
        "  Available Routes:",
        "    /builtin/create_messages",
    ]
    assert lines[-2:] == ["", "Total components: 10"]
    assert "Input Schema:" not in done.stdout


def test_list_components_pretty_with_schemas(tmp_path: Path) -> None:
    done = stepflow("list-components", "--schemas", "true", cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert done.stdout.count("  Input Schema:") == 10
    assert done.stdout.count("  Output Schema:") == 10


def test_list_components_json(tmp_path: Path) -> None:
    done = stepflow("list-components", "--format", "json", cwd=tmp_path)
    assert done.code == 0, done.stderr
    components = json.loads(done.stdout)["components"]
    assert [c["component"] for c in components] == COMPONENT_ORDER
    sleep = components[-1]
    assert sleep["path"] == "/sleep"
    assert sleep["plugin"] == "builtin"
    assert sleep["routes"] == ["/builtin/sleep"]
    assert sleep["input_schema"]["required"] == ["duration_ms"]
    assert "output_schema" in sleep
    assert done.stdout.startswith('{\n  "components": [')  # pretty-printed


def test_list_components_yaml_without_schemas(tmp_path: Path) -> None:
    done = stepflow("list-components", "--format", "yaml", "--schemas", "false", cwd=tmp_path)
    assert done.code == 0, done.stderr
    components = yaml.safe_load(done.stdout)["components"]
    assert [c["component"] for c in components] == COMPONENT_ORDER
    assert all("input_schema" not in c and "output_schema" not in c for c in components)


def test_list_components_uses_config_routes(tmp_path: Path) -> None:
    write(
        tmp_path / "stepflow-config.yml",
        "plugins:\n  tools: {type: builtin}\n  spare: {type: builtin}\n"
        'routes:\n  "/x": [{plugin: tools}]\n',
    )
    done = stepflow("list-components", "--format", "json", cwd=tmp_path)
    assert done.code == 0, done.stderr
    components = json.loads(done.stdout)["components"]
    # The unrouted plugin's components are hidden by default.
    assert [(c["component"], c["plugin"]) for c in components] == [
        (c, "tools") for c in COMPONENT_ORDER
    ]
    assert components[0]["routes"] == ["/x/create_messages"]
    shown = stepflow(
        "list-components", "--format", "json", "--hide-unreachable", "false", cwd=tmp_path
    )
    assert len(json.loads(shown.stdout)["components"]) == 20


# -- test --------------------------------------------------------------------------------------

TESTED_FLOW = (
    SCHEMA_HEADER
    + """\
name: tested
steps:
  - id: build
    component: /builtin/create_messages
    input:
      user_prompt: {$input: prompt}
output:
  msgs: {$step: build, path: messages}
test:
  cases:
    - name: good
      input: {prompt: hi}
      output:
        outcome: success
        result:
          msgs: [{role: user, content: hi}]
    - name: wrong
      input: {prompt: yo}
      output: {outcome: success, result: {msgs: []}}
    - name: missing
      input: {prompt: zz}
    - name: failing
      input: {}
      output:
        outcome: failed
        error: {code: EXPRESSION_FAILURE, message: Input path $.prompt not found}
"""
)


@pytest.fixture
def tested(tmp_path: Path) -> Path:
    return write(tmp_path / "tested.yaml", TESTED_FLOW)


def test_test_reports_passing_and_failing_cases(tested: Path, tmp_path: Path) -> None:
    done = stepflow("test", "tested.yaml", cwd=tmp_path)
    assert done.code == 1
    out = done.stdout
    assert "----------\nRunning 4 test cases in batch mode (max_concurrency=10)\n" in out
    assert "Test Case wrong failed. New Output:\n" in out
    assert "Test Case missing failed. New Output:\n" in out
    assert "Test Case good failed" not in out
    assert "Test Case failing failed" not in out
    assert "tested.yaml: 2/4 passed" in out
    summary = out[out.index("=== Test Summary ===") :].splitlines()
    assert summary == [
        "=== Test Summary ===",
        "Files tested: 1",
        "Total test cases: 4",
        "Passed: 2",
        "Failed: 2",
    ]
    assert "2 test(s) failed" in done.stderr


def test_test_selected_cases_pass(tested: Path, tmp_path: Path) -> None:
    done = stepflow("test", "tested.yaml", "--case", "good", "--case", "failing", cwd=tmp_path)
    assert done.code == 0, done.stdout
    assert "Running 2 test cases in batch mode" in done.stdout
    assert "tested.yaml: 2/2 passed" in done.stdout
    assert done.stdout.rstrip().endswith("Passed: 2\nFailed: 0")


def test_test_diff_output(tested: Path, tmp_path: Path) -> None:
    done = stepflow("test", "tested.yaml", "--case", "wrong", "--diff", cwd=tmp_path)
    assert done.code == 1
    out = done.stdout
    assert "Test Case wrong failed:\n--- Expected\n+++ Actual\n" in out
    assert "-  msgs: []" in out
    assert "+  - content: yo" in out


def test_test_update_rewrites_expected_outputs(tested: Path, tmp_path: Path) -> None:
    done = stepflow("test", "tested.yaml", "--update", cwd=tmp_path)
    assert done.code == 1  # this run still had failures
    assert "Applied 2 output update(s) across 1 file(s)" in done.stdout
    text = tested.read_text()
    assert text.startswith(SCHEMA_HEADER)  # the header stays first
    doc = yaml.safe_load(text)
    cases = {c["name"]: c for c in doc["test"]["cases"]}
    assert cases["wrong"]["output"] == {
        "outcome": "success",
        "result": {"msgs": [{"content": "yo", "role": "user"}]},
    }
    assert cases["missing"]["output"] == {
        "outcome": "success",
        "result": {"msgs": [{"content": "zz", "role": "user"}]},
    }
    # Passing cases and the flow itself are untouched.
    assert cases["good"]["output"]["result"] == {"msgs": [{"role": "user", "content": "hi"}]}
    assert doc["steps"][0]["input"] == {"user_prompt": {"$input": "prompt"}}
    rerun = stepflow("test", "tested.yaml", cwd=tmp_path)
    assert rerun.code == 0, rerun.stdout
    assert "tested.yaml: 4/4 passed" in rerun.stdout


def test_test_update_with_case_only_touches_that_case(tested: Path, tmp_path: Path) -> None:
    done = stepflow("test", "tested.yaml", "--update", "--case", "missing", cwd=tmp_path)
    assert "Applied 1 output update(s) across 1 file(s)" in done.stdout
    cases = {c["name"]: c for c in yaml.safe_load(tested.read_text())["test"]["cases"]}
    assert cases["missing"]["output"]["outcome"] == "success"
    assert cases["wrong"]["output"] == {"outcome": "success", "result": {"msgs": []}}


def test_test_directory_walk(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    passing = TESTED_FLOW.replace(
        "    - name: wrong\n      input: {prompt: yo}\n"
        "      output: {outcome: success, result: {msgs: []}}\n"
        "    - name: missing\n      input: {prompt: zz}\n",
        "",
    )
    write(suite / "b" / "ok.yaml", passing)
    write(suite / "a_no_tests.yml", "steps: []\n")
    write(suite / "broken.yaml", SCHEMA_HEADER + "steps: 5\n")
    write(suite / "notes.txt", "not yaml at all: [")
    write(suite / "list.yaml", "- just\n- a list\n")
    done = stepflow("test", "suite", cwd=tmp_path)
    assert done.code == 1  # the broken flow (it has the schema header) counts as an error
    out = done.stdout
    assert "suite/list.yaml: Skipped (invalid or non-flow file)" in out
    assert "suite/broken.yaml: Error - suite/broken.yaml: steps" in out
    assert "suite/b/ok.yaml: 2/2 passed" in out
    summary = out[out.index("=== Test Summary ===") :].splitlines()
    assert summary == [
        "=== Test Summary ===",
        "Files tested: 3",
        "Files skipped: 1",
        "Files errored: 1",
        "Total test cases: 2",
        "Passed: 2",
        "Failed: 0",
    ]
    assert "notes.txt" not in out


def test_test_missing_path(tmp_path: Path) -> None:
    line = stepflow("test", "nowhere", cwd=tmp_path).error_line()
    assert line == "Error: Missing file: nowhere"


def test_test_uses_inline_test_config(tmp_path: Path) -> None:
    write(
        tmp_path / "routed.yaml",
        """\
steps:
  - id: n
    component: /mine/noop
    input: {$input: $}
output: {$step: n}
test:
  config:
    plugins: {b: {type: builtin}}
    routes: {"/mine": [{plugin: b}]}
  cases:
    - name: echo
      input: [1, 2]
      output: {outcome: success, result: [1, 2]}
""",
    )
    done = stepflow("test", "routed.yaml", cwd=tmp_path)
    assert done.code == 0, done.stdout
    assert "routed.yaml: 1/1 passed" in done.stdout
