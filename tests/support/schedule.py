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
  worker is one that does not wait for it, where there is one.
"""

from __future__ import annotations

import os

import pytest

# Seconds per test (setup + call) on 2 busy cores (a loaded run), from `pytest --durations`, of the
# tests over ~10 s; parametrized tests by their function (seconds per parametrization), a module's
# path for the whole module. Only the order matters: refresh from a `make test` run's durations
# when a test gets much faster/slower. (Last refresh: a `-n 2 --dist loadfile --durations=0` run on
# a 2-core AMD EPYC shared with other jobs, 57 min: its seconds / 5.5, the ratio of that run's wall
# time to a 10 min 24 s `make test` on the same machine less busy.)
COST = {
  "tests/test_documented_commands.py": 317,
  "tests/gcs/test_gcs_pipeline.py": 101,
  "tests/scale/test_multihost.py::test_two_processes_match_one_process_with_four_devices": 69,
  "tests/scale/test_elastic.py::test_checkpoint_from_8_devices_resumes_on_4": 65,
  "tests/reliability/test_resume.py": 48,
  "tests/nnx/test_training.py::test_nnx_model_pipeline_interrupted_resumed_exported": 30,
  "tests/core/test_dkm_fast.py": 28,
  "tests/nnx/test_sharded.py::test_sharded_nnx_step_equals_one_device_and_restores_on_another_mesh":
    23,
  "tests/core/test_dkm.py": 23,
  "tests/core/test_kmeans.py": 23,
  "tests/nnx/test_convert.py": 22,
  "tests/train/test_dkm_refresh.py::test_sharded_step_with_carried_lists_and_offsets_equals_one_device":
    21,
  "tests/nnx/test_transformer.py::test_train_step_export_load": 20,
  "tests/train/test_recipe_options.py::test_pipeline_with_every_option_on": 20,
  "tests/scale/test_sharded_step.py::test_sharded_quantize_step_matches_single_device": 19,
  "tests/test_export.py::test_resnet18_roundtrip_and_bytes_equal_accounting": 19,
  "tests/nnx/test_linen_view.py::test_train_steps_of_the_training_system_match_linen": 17,
  "tests/test_examples.py::test_own_model_example": 16,
  "tests/train/test_pipeline.py::test_embedded_pipeline_runs_every_stage": 16,
  "tests/scale/test_sharded_eval.py::test_sharded_hard_codes_match_one_device_per_batch_evaluation":
    13,
  "tests/train/test_dkm_refresh.py::test_three_steps_with_refresh_two_carry_the_lists": 12,
  "tests/train/test_run_config.py::test_rerun_with_another_config_stops_with_the_fields": 11,
  "tests/train/test_dim_select.py": 10,
  "tests/nnx/test_linen_view.py::test_quantize_stage_matches_linen_soft_and_hard": 10,
  "tests/core/test_kmeans_bounds.py::test_bounded_loop_equals_plain_loop":
    8,  # per parametrization (3)
  "tests/test_export.py::test_plain_model_roundtrip": 7,  # per parametrization (2)
  "tests/reliability/test_cli_errors.py::test_train_bad_config_value": 6,  # per parametrization (2)
  "tests/core/test_kmeans_seeding.py::test_own_seeding_is_deterministic_and_within_2pct_of_full_data_seeding":
    6,  # per parametrization (2)
  "tests/nn/test_recorded.py::test_artifact_decodes_to_the_evaluated_model_with_or_without_config":
    4,  # per parametrization (4)
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
