"""The real `stepflow` CLI in a real process, plus the `recorder` test plugin type.

Usage: python harness.py <stepflow arguments...>
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recorder_plugin  # noqa: F401 - registers the plugin type
from stepflow_mesh.runtime.cli.main import main

if __name__ == "__main__":
    main()
