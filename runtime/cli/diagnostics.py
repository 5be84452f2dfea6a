"""Printing validation diagnostics in upstream's layout (flows.md §10.4)."""

from __future__ import annotations

from typing import TextIO

from ..validation import Diagnostic

SECTIONS = (("fatal", "🚨 Fatal Issues:"), ("error", "❌ Errors:"), ("warning", "⚠️  Warnings:"))


def has_errors(diagnostics: list[Diagnostic]) -> bool:
    return any(d.level != "warning" for d in diagnostics)


def print_diagnostics(diagnostics: list[Diagnostic], out: TextIO) -> None:
    if not diagnostics:
        print("✅ Validation passed with no errors", file=out)
        return
    counts = {level: sum(1 for d in diagnostics if d.level == level) for level, _ in SECTIONS}
    print(
        f"📊 Validation results: {counts['fatal']} fatal, {counts['error']} errors, "
        f"{counts['warning']} warnings",
        file=out,
    )
    for level, title in SECTIONS:
        selected = [d for d in diagnostics if d.level == level]
        if selected:
            print(title, file=out)
            for d in selected:
                print(f"  {level.upper()} {d.message} ({d.path})", file=out)
