"""What every exported span and metric says about its source: the OTLP resource and scope."""

from __future__ import annotations

import os

from .settings import TelemetrySettings

SCOPE_NAME = "stepflow"


def make_resource(settings: TelemetrySettings) -> dict[str, str | int | float | bool]:
    """The SDK's resource detection (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`, SDK
    attributes); our service name unless the environment names one."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    attributes: dict[str, str] = {}
    from_env = OTELResourceDetector().detect().attributes
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name" not in from_env:
        attributes["service.name"] = settings.service_name
    resource = Resource.create(attributes).attributes
    return {k: v for k, v in resource.items() if isinstance(v, str | int | float | bool)}
