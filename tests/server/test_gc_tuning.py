"""The node's GC settings (runtime/server/gc_tuning.py), applied in a fresh interpreter so the
test process's own collector is left alone."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, sys, weakref
from stepflow_mesh.runtime.server.gc_tuning import tune_for_serving
gc.set_threshold(int(sys.argv[1]), 10, 10)
class Node: pass
garbage = Node()
garbage.self = garbage  # a start-up cycle: collected, not frozen for the process's lifetime
alive = weakref.ref(garbage)
del garbage
tune_for_serving()
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "cycle_collected": alive() is None}))
"""


def tuned(young_threshold: int) -> dict[str, object]:
    probe = [sys.executable, "-c", PROBE, str(young_threshold)]
    output = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
    result: dict[str, object] = json.loads(output)
    return result


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    result = tuned(700)
    assert result["threshold"] == [10_000, 10, 10]
    assert isinstance(result["frozen"], int) and result["frozen"] > 1000  # modules, classes, ...
    assert result["cycle_collected"] is True


def test_a_higher_threshold_already_set_is_kept() -> None:
    assert tuned(50_000)["threshold"] == [50_000, 10, 10]
