"""`openai`: one chat completion against an OpenAI-compatible endpoint."""

from __future__ import annotations

import os
from typing import Any

import httpx

from ..plugins.base import StepCall
from .base import Builtin, BuiltinError, field_of, invalid_input, schema
from .messages import MESSAGE_SCHEMA

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-3.5-turbo"
TIMEOUT_SECS = 120.0


def _request_body(call: StepCall) -> dict[str, Any]:
    messages = field_of(call, "messages", "array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system", "user", "assistant",
        ) or not isinstance(message.get("content"), str):  # fmt: skip
            raise invalid_input(f"messages[{i}] must be {{role: system|user|assistant, content}}")
    body: dict[str, Any] = {
        "model": field_of(call, "model", "string", required=False) or DEFAULT_MODEL,
        "messages": messages,
    }
    max_tokens = field_of(call, "max_tokens", "integer", required=False)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    temperature = field_of(call, "temperature", "number", required=False)
    if temperature is not None:
        body["temperature"] = temperature
    return body


def _endpoint(call: StepCall) -> tuple[str, str]:
    """Base URL and key: input `api_key`, then the builtin plugin's `openai` config, then env."""
    settings = call.plugin_config.get("openai") or {}
    key_env = settings.get("apiKeyEnv") or "OPENAI_API_KEY"
    api_key = (
        field_of(call, "api_key", "string", required=False)
        or settings.get("apiKey")
        or os.environ.get(key_env)
    )
    if not api_key:
        raise invalid_input(f"no API key: set 'api_key' in the input or {key_env}")
    base_url = settings.get("baseUrl") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    return base_url, api_key


async def _openai(call: StepCall) -> Any:
    body = _request_body(call)
    base_url, api_key = _endpoint(call)
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECS) as client:
            response = await client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise BuiltinError("RESOURCE_UNAVAILABLE", f"request to {url} failed: {exc}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise BuiltinError(
            "RESOURCE_UNAVAILABLE", f"{url} answered {response.status_code}: {response.text[:200]}"
        )
    if response.status_code >= 400:
        raise BuiltinError(
            "COMPONENT_FAILED", f"{url} answered {response.status_code}: {response.text[:200]}"
        )
    try:
        reply = response.json()
    except ValueError:
        raise BuiltinError("COMPONENT_FAILED", f"{url} answered with invalid JSON") from None
    return {"response": _first_content(reply, url)}


def _first_content(reply: Any, url: str) -> str:
    """The first choice's message content ("" when there is none); other shapes are a failure."""
    unexpected = BuiltinError("COMPONENT_FAILED", f"{url} answered with an unexpected reply shape")
    choices = (reply.get("choices") or []) if isinstance(reply, dict) else None
    if not isinstance(choices, list):
        raise unexpected
    first = choices[0] if choices else {}
    message = (first.get("message") or {}) if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise unexpected
    content = message.get("content") or ""
    if not isinstance(content, str):
        raise unexpected
    return content


OPENAI = Builtin(
    "openai",
    "Sends chat messages to an OpenAI-compatible API and returns the reply.",
    _openai,
    schema(
        {
            "messages": {"type": "array", "items": MESSAGE_SCHEMA},
            "max_tokens": {"type": "integer"},
            "temperature": {"type": "number"},
            "api_key": {"type": "string"},
            "model": {"type": "string"},
        },
        ["messages"],
    ),
    schema({"response": {"type": "string"}}, ["response"]),
)
