"""Flow results, step failures and user-facing errors.

`FlowResult` is the unit everywhere (CLI output, test expectations, `map.results`, the journal), so
it has exactly one JSON form, produced and parsed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ERROR_CODES = (
    "TIMEOUT",
    "UNREACHABLE",
    "COMPONENT_FAILED",
    "RESOURCE_UNAVAILABLE",
    "CANCELLED",
    "INVALID_INPUT",
    "COMPONENT_NOT_FOUND",
    "EXPRESSION_FAILURE",
    "ORCHESTRATOR_ERROR",
    "WORKER_ERROR",
    "UNSPECIFIED",
)
TRANSPORT_CODES = frozenset({"TIMEOUT", "UNREACHABLE"})
COMPONENT_RETRY_CODES = frozenset({"COMPONENT_FAILED", "RESOURCE_UNAVAILABLE"})

_MISSING: Any = object()


@dataclass(frozen=True)
class FlowError:
    """A failure as flows see it: a code, a message and optional structured data."""

    code: str
    message: str
    data: Any = _MISSING

    @property
    def has_data(self) -> bool:
        return self.data is not _MISSING

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.has_data:
            out["data"] = self.data
        return out

    @staticmethod
    def from_json(value: Any, where: str = "error") -> FlowError:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object with 'code' and 'message'")
        code = value.get("code", "UNSPECIFIED")
        if not isinstance(code, str) or code not in ERROR_CODES:
            raise ValueError(f"{where}.code: unknown error code {code!r}")
        message = value.get("message", "")
        if not isinstance(message, str):
            raise ValueError(f"{where}.message: expected a string")
        return FlowError(code, message, value.get("data", _MISSING))


@dataclass(frozen=True)
class FlowResult:
    """Success with a value, or failure with a `FlowError`."""

    value: Any = None
    error: FlowError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @staticmethod
    def success(value: Any) -> FlowResult:
        return FlowResult(value=value)

    @staticmethod
    def failure(code: str, message: str, data: Any = _MISSING) -> FlowResult:
        return FlowResult(error=FlowError(code, message, data))

    def to_json(self) -> dict[str, Any]:
        if self.error is None:
            return {"outcome": "success", "result": self.value}
        return {"outcome": "failed", "error": self.error.to_json()}

    @staticmethod
    def from_json(value: Any, where: str = "result") -> FlowResult:
        """Parse the FlowResult JSON form; any other `outcome` is rejected."""
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object with 'outcome'")
        outcome = value.get("outcome")
        if outcome == "success":
            return FlowResult.success(value.get("result"))
        if outcome == "failed":
            return FlowResult(error=FlowError.from_json(value.get("error"), f"{where}.error"))
        raise ValueError(f"{where}.outcome: expected 'success' or 'failed', got {outcome!r}")


def plugin_failure(step_id: str, component: str, detail: str | None, category: str) -> FlowResult:
    """The exact shape upstream gives a plugin-level failure (flows.md §6)."""
    attachments = [f"Component: {component}", f"Component execution failed for step '{step_id}'"]
    if detail:
        attachments.append(detail)
    message = f'step "{step_id}" failed'
    stack = [{"error": message, "attachments": attachments}, {"error": category}]
    return FlowResult.failure("UNREACHABLE", message, {"stack": stack})


USER_FUNCTION_ERROR = "error executing user-defined function"
COMPONENT_ERROR = "error executing component"


class PluginError(Exception):
    """A plugin could not produce a result; becomes a plugin-level failure of the step."""

    def __init__(self, detail: str, category: str = COMPONENT_ERROR) -> None:
        super().__init__(detail)
        self.detail = detail
        self.category = category


@dataclass
class UserError(Exception):
    """An error caused by the user's files or arguments: printed as one line, exit code 1.

    `where` names the file and, when known, the step and field, e.g. `flow.yaml: steps[2].input`.
    """

    message: str
    where: str | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message
