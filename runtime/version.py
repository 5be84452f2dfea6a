"""The package version: what `stepflow --version` prints, node records publish and telemetry names
as its scope version. Read once from the installed distribution's metadata."""

from __future__ import annotations

import importlib.metadata

VERSION = importlib.metadata.version("stepflow-mesh")
