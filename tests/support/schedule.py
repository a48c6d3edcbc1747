"""The order pytest-xdist workers get the tests in: a module at a time, longest first.

`make test` runs `-n 2 --dist loadfile --no-loadscope-reorder`: the controller hands out work
units, all tests of one module, in collection order, a unit at a time as a worker runs low. So
the order below is the schedule: longest processing time first (LPT), so the two workers finish
together instead of one running a long end-to-end test alone at the end.

* A module is one unit: its module-scoped fixtures (a sandbox that runs the README's commands in
  order, a killed-and-resumed training run, a GCS emulator) are made once, on one worker, and
  tests that build on each other keep their order. (`--dist loadgroup` would allow finer units,
  but pytest 9 ignores the node-id suffix by which xdist 3.8 marks the groups.)
* Modules are sorted by their estimated seconds (COST below, else the sum of their tests'),
  longest first; a module keeps its tests' order.
* The session's background quick run (tests/conftest.py) trains meanwhile: the first unit of each
  worker is one that does not wait for it, where there is one (then the 4-device reference of
  tests/scale trains in the background too).
"""

from __future__ import annotations

import os

import pytest

# Seconds per test (setup + call) on 2 busy cores (a loaded run), from `pytest --durations`, of the
# tests over ~10 s; parametrized tests by their function (seconds per parametrization), a module's
# path for the whole module. Only the order matters: refresh from a `make test` run's durations
# when a test gets much faster/slower. (Last refresh: the slowest durations of a 10 min 24 s run on
# an AMD EPYC with 2 cores; tests/scale's, less the 4-device reference now trained in the
# background.)
COST = {
  "tests/test_documented_commands.py": 300,  # the README's commands, in order, in one sandbox
  "tests/reliability/test_resume.py": 67,
  "tests/scale/test_multihost.py::test_two_processes_match_one_process_with_four_devices": 45,
  "tests/gcs/test_gcs_pipeline.py": 68,
  "tests/scale/test_elastic.py::test_checkpoint_from_8_devices_resumes_on_4": 32,
  "tests/test_export.py::test_resnet18_roundtrip_and_bytes_equal_accounting": 26,
  "tests/nnx/test_training.py::test_nnx_model_pipeline_interrupted_resumed_exported": 27,
  "tests/nnx/test_sharded.py::test_sharded_nnx_step_equals_one_device_and_restores_on_another_mesh":
    22,
  "tests/scale/test_sharded_step.py::test_sharded_quantize_step_matches_single_device": 18,
  "tests/train/test_dkm_refresh.py::test_sharded_step_with_carried_lists_and_offsets_equals_one_device":
    11,
  "tests/nnx/test_transformer.py::test_train_step_export_load": 11,
  "tests/test_examples.py::test_own_model_example": 11,
  "tests/train/test_recipe_options.py::test_pipeline_with_every_option_on": 22,
  "tests/nnx/test_linen_view.py::test_train_steps_of_the_training_system_match_linen": 11,
  "tests/train/test_pipeline.py::test_embedded_pipeline_runs_every_stage": 19,
  "tests/train/test_dim_select.py": 10,
  "tests/core/test_kmeans_seeding.py": 11,
  "tests/reliability/test_cli_errors.py": 12,
  "tests/scale/test_sharded_eval.py::test_sharded_hard_codes_match_one_device_per_batch_evaluation":
    8,
  "tests/nn/test_recorded.py::test_artifact_decodes_to_the_evaluated_model_with_or_without_config":
    5,  # per parametrization (4)
}  # fmt: skip
SLOW_DEFAULT = 8.0  # a test marked `slow` that COST does not list
DEFAULT = 0.5
BACKGROUND_FIXTURE = "quick_run"


def _module(item: pytest.Item) -> str:
  return item.nodeid.split("::", 1)[0]


def _cost(item: pytest.Item) -> float:
  name = item.nodeid.split("[", 1)[0]
  if name in COST:
    return COST[name]
  return SLOW_DEFAULT if item.get_closest_marker("slow") else DEFAULT


def order_for_workers(items: list[pytest.Item]) -> None:
  """Sorts `items` in place a module at a time, the longest module first (ties keep collection
  order; a module keeps its tests' order)."""
  units: dict[str, list[pytest.Item]] = {}
  for item in items:
    units.setdefault(_module(item), []).append(item)
  cost = {k: COST.get(k) or sum(_cost(i) for i in v) for k, v in units.items()}
  order = sorted(units, key=lambda k: -cost[k])  # stable: ties in collection order
  workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
  waits = {k: any(BACKGROUND_FIXTURE in i.fixturenames for i in units[k]) for k in order}
  for slot in range(min(workers, len(order))):
    if waits[order[slot]]:
      later = next((j for j in range(slot + 1, len(order)) if not waits[order[j]]), None)
      if later is not None:
        order.insert(slot, order.pop(later))
  items[:] = [i for k in order for i in units[k]]
