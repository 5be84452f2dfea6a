"""`stepflow test`: run the cases embedded in flow files and compare results (flows.md §11)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .config import Config, discover_config, load_config, parse_config
from .engine import Runtime
from .errors import FlowResult, UserError
from .model import FLOW_SCHEMA_URL, Flow, parse_flow, read_document
from .yaml12 import dump_yaml

NIL_RUN_ID = "00000000-0000-0000-0000-000000000000"
TEST_CONFIG_NAMES = (
    "stepflow-config.test.yml",
    "stepflow-config.test.yaml",
    "stepflow_config.test.yml",
    "stepflow_config.test.yaml",
)
_SCHEMA_LINE = re.compile(r"^schema:\s*['\"]?" + re.escape(FLOW_SCHEMA_URL), re.MULTILINE)


@dataclass
class FileReport:
    path: Path
    passed: int = 0
    total: int = 0
    execution_errors: int = 0
    skipped: bool = False  # a flow without (selected) cases
    error: str | None = None
    updates: int = 0

    @property
    def failed(self) -> int:
        return self.total - self.passed


@dataclass
class TestOptions:
    config_path: Path | None = None
    cases: tuple[str, ...] = ()
    update: bool = False
    diff: bool = False
    max_concurrency: int = 10


@dataclass
class Summary:
    reports: list[FileReport] = field(default_factory=list)
    invalid: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.error is None and r.failed == 0 for r in self.reports)


def collect_files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += [p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
        else:
            raise UserError(f"Missing file: {path}")
    return sorted(found)


def normalise(value: Any) -> Any:
    """Sort keys, blank every string `run_id`, drop every `backtrace`."""
    if isinstance(value, dict):
        out = {}
        for key in sorted(value):
            if key == "backtrace":
                continue
            item = value[key]
            out[key] = NIL_RUN_ID if key == "run_id" and isinstance(item, str) else normalise(item)
        return out
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def partial_match(expected: Any, actual: Any) -> bool:
    """Expected keys must match (extra actual keys allowed); lists element-wise; typed scalars."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and partial_match(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(partial_match(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return type(expected) is type(actual) and expected == actual


def results_match(expected: Any, actual: Any) -> bool:
    if not isinstance(expected, dict) or expected.get("outcome") != actual.get("outcome"):
        return False
    if expected["outcome"] == "success":
        return partial_match(expected.get("result"), actual.get("result"))
    exp_err, act_err = expected.get("error") or {}, actual.get("error") or {}
    if exp_err.get("code") != act_err.get("code") or exp_err.get("message") != act_err.get(
        "message"
    ):
        return False
    return "data" not in exp_err or (
        "data" in act_err and partial_match(exp_err["data"], act_err["data"])
    )


def _test_config(flow: Flow, flow_path: Path, options: TestOptions) -> Config:
    """--config > test.configFile > test.config > stepflow-config.test.* > discovery > default."""
    if options.config_path is not None:
        return load_config(options.config_path)
    test = flow.test or {}
    config_file = test.get("configFile")
    inline = test.get("config", test.get("stepflow_config"))
    if config_file is not None and inline is not None:
        raise UserError("'configFile' and 'config' are mutually exclusive", f"{flow_path}: test")
    if config_file is not None:
        return load_config(flow_path.parent / str(config_file))
    if inline is not None:
        return parse_config(inline, f"{flow_path}: test.config", flow_path.parent.resolve())
    for name in TEST_CONFIG_NAMES:
        if (flow_path.parent / name).is_file():
            return load_config(flow_path.parent / name)
    return discover_config(None, flow_path.parent)


def _with_memory_storage(config: Config) -> Config:
    if config.storage is None:
        config.storage = {"type": "inMemory"}
    return config


def _selected_cases(flow: Flow, options: TestOptions) -> list[tuple[int, dict[str, Any]]]:
    cases = (flow.test or {}).get("cases") or []
    if not isinstance(cases, list):
        raise UserError("'test.cases' must be a list", f"{flow.source}: test.cases")
    selected = []
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            raise UserError("every test case needs a 'name'", f"{flow.source}: test.cases[{i}]")
        if not options.cases or case["name"] in options.cases:
            selected.append((i, case))
    return selected


def _yaml_lines(value: Any) -> list[str]:
    return dump_yaml(value).rstrip("\n").split("\n")


def _print_mismatch(name: str, expected: Any, actual: Any, diff: bool, out: TextIO) -> None:
    if diff and expected is not None:
        print(f"Test Case {name} failed:", file=out)
        print("--- Expected", file=out)
        print("+++ Actual", file=out)
        for line in difflib.ndiff(_yaml_lines(normalise(expected)), _yaml_lines(actual)):
            if not line.startswith("?"):
                print(line[0] + line[2:], file=out)
        return
    print(f"Test Case {name} failed. New Output:", file=out)
    print(dump_yaml(actual).rstrip("\n"), file=out)


async def run_file(path: Path, options: TestOptions, out: TextIO) -> FileReport | None:
    """Run one file's cases as one batch; None for a non-flow file (not counted)."""
    report = FileReport(path)
    try:
        doc = read_document(path)
        flow = parse_flow(doc, str(path))
    except UserError as exc:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if _SCHEMA_LINE.search(text):
            report.error = str(exc)
            print(f"{path}: Error - {exc}", file=out)
            return report
        print(f"{path}: Skipped (invalid or non-flow file)", file=out)
        return None
    try:
        cases = _selected_cases(flow, options)
        if not cases:
            report.skipped = True
            print(f"{path}: 0/0 passed", file=out)
            return report
        config = _with_memory_storage(_test_config(flow, path, options))
        print("----------", file=out)
        print(
            f"Running {len(cases)} test cases in batch mode "
            f"(max_concurrency={options.max_concurrency})",
            file=out,
        )
        async with Runtime(config) as runtime:
            outcome = await runtime.run(
                flow, [c.get("input") for _, c in cases], max_concurrency=options.max_concurrency
            )
    except UserError as exc:
        report.error = str(exc)
        print(f"{path}: Error - {exc}", file=out)
        return report
    _compare(report, doc, cases, outcome.results, options, out)
    print(f"{path}: {report.passed}/{report.total} passed", file=out)
    return report


def _compare(
    report: FileReport,
    doc: dict[str, Any],
    cases: list[tuple[int, dict[str, Any]]],
    results: list[FlowResult],
    options: TestOptions,
    out: TextIO,
) -> None:
    report.total = len(cases)
    for (index, case), result in zip(cases, _pad(results, len(cases)), strict=True):
        name = case["name"]
        if result is None:
            report.execution_errors += 1
            print(f"Test Case {name} execution error: no result was produced", file=out)
            continue
        actual = normalise(result.to_json())
        expected = case.get("output")
        if expected is not None and results_match(normalise(expected), actual):
            report.passed += 1
            continue
        _print_mismatch(name, expected, actual, options.diff, out)
        if options.update:
            doc["test"]["cases"][index]["output"] = actual
            report.updates += 1
    if report.updates:
        report.path.write_text(dump_yaml(doc), encoding="utf-8")


def _pad(results: list[FlowResult], n: int) -> Iterator[FlowResult | None]:
    yield from results[:n]
    yield from [None] * (n - len(results))


def print_summary(summary: Summary, out: TextIO) -> None:
    for report in summary.reports:
        if report.error is not None:
            print(f"{report.path}: Error {report.error}", file=out)
        elif report.skipped:
            print(f"{report.path}: Skipped (no test cases)", file=out)
        else:
            errors = f" ({report.execution_errors} errors)" if report.execution_errors else ""
            print(f"{report.path}: {report.passed}/{report.total} passed{errors}", file=out)
    reports = summary.reports
    total = sum(r.total for r in reports)
    passed = sum(r.passed for r in reports)
    skipped = sum(1 for r in reports if r.skipped)
    errored = sum(1 for r in reports if r.error is not None)
    exec_errors = sum(r.execution_errors for r in reports)
    print("", file=out)
    print("=== Test Summary ===", file=out)
    print(f"Files tested: {len(reports)}", file=out)
    if skipped:
        print(f"Files skipped: {skipped}", file=out)
    if errored:
        print(f"Files errored: {errored}", file=out)
    print(f"Total test cases: {total}", file=out)
    print(f"Passed: {passed}", file=out)
    print(f"Failed: {total - passed}", file=out)
    if exec_errors:
        print(f"Execution errors: {exec_errors}", file=out)
    updates = [r for r in reports if r.updates]
    if updates:
        count = sum(r.updates for r in updates)
        print(f"Applied {count} output update(s) across {len(updates)} file(s)", file=out)


async def run_tests(paths: list[Path], options: TestOptions, out: TextIO) -> Summary:
    summary = Summary()
    for path in collect_files(paths):
        report = await run_file(path, options, out)
        if report is None:
            summary.invalid.append(path)
        else:
            summary.reports.append(report)
    print_summary(summary, out)
    return summary
