"""`recovery` and `journal` config sections (durability.md §8), with their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UserError


@dataclass(frozen=True)
class DurabilitySettings:
    checkpoint_interval: int = 1000  # journal entries between checkpoints; 0 disables
    lease_ttl_secs: float = 10.0
    compact_on_checkpoint: bool = True
    retention_secs: float = 3600.0  # finished journals are finalized after this long
    recovery_enabled: bool = True  # a cluster node claims orphaned runs
    check_interval_secs: float = 30.0  # the periodic orphan sweep (the etcd watch comes first)
    max_startup_recovery: int = 100
    max_claims_per_check: int = 10


def durability_settings(raw: dict[str, Any], source: str = "config") -> DurabilitySettings:
    recovery = _section(raw, "recovery", source)
    journal = _section(raw, "journal", source)
    defaults = DurabilitySettings()
    return DurabilitySettings(
        checkpoint_interval=int(
            _number(recovery, "checkpointInterval", defaults.checkpoint_interval, source)
        ),
        lease_ttl_secs=_number(recovery, "leaseTtlSecs", defaults.lease_ttl_secs, source),
        compact_on_checkpoint=_flag(
            journal, "compactOnCheckpoint", defaults.compact_on_checkpoint, source
        ),
        retention_secs=_number(journal, "retentionSecs", defaults.retention_secs, source),
        recovery_enabled=_flag(recovery, "enabled", defaults.recovery_enabled, source),
        check_interval_secs=_number(
            recovery, "checkIntervalSecs", defaults.check_interval_secs, source
        ),
        max_startup_recovery=int(
            _number(recovery, "maxStartupRecovery", defaults.max_startup_recovery, source)
        ),
        max_claims_per_check=int(
            _number(recovery, "maxClaimsPerCheck", defaults.max_claims_per_check, source)
        ),
    )


def _section(raw: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError("expected a map", f"{source}: {name}")
    return {"__name__": name, **value}


def _number(section: dict[str, Any], key: str, default: float, source: str) -> float:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UserError("expected a non-negative number", f"{source}: {section['__name__']}.{key}")
    return float(value)


def _flag(section: dict[str, Any], key: str, default: bool, source: str) -> bool:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UserError("expected true or false", f"{source}: {section['__name__']}.{key}")
    return value
