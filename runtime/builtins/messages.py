"""`create_messages`: build a chat message list from a prompt and optional instructions."""

from __future__ import annotations

from typing import Any

from ..plugins.base import StepCall
from .base import Builtin, field_of, schema


async def _create_messages(call: StepCall) -> Any:
    prompt = field_of(call, "user_prompt", "string")
    system = field_of(call, "system_instructions", "string", required=False)
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": prompt})
    return {"messages": messages}


MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
        "content": {"type": "string"},
    },
    "required": ["role", "content"],
}

CREATE_MESSAGES = Builtin(
    "create_messages",
    "Creates a chat message list from a user prompt and optional system instructions.",
    _create_messages,
    schema(
        {"user_prompt": {"type": "string"}, "system_instructions": {"type": ["string", "null"]}},
        ["user_prompt"],
    ),
    schema({"messages": {"type": "array", "items": MESSAGE_SCHEMA}}, ["messages"]),
)
