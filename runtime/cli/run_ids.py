"""Run ids as users type them: with or without hyphens (the CLI prints them without)."""

from __future__ import annotations

import uuid

from ..errors import UserError


def normalise_run_id(text: str) -> str:
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise UserError(f"not a run id: {text!r} (expected 32 hex digits)") from None
