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

# Seconds per test (setup + call), from `pytest --durations` of a whole `make test`, for the tests
# over ~4 s; parametrized tests by their function (seconds per parametrization), a module's path for
# the whole module. Only the order matters: refresh from a `make test` run's durations when a test
# gets much faster/slower. (Last refresh: `make test`, 5 min 38 s on an idle 2-core AMD EPYC.)
COST = {
  "tests/test_documented_commands.py": 155,
  "tests/scale/test_elastic.py": 53,
  "tests/gcs/test_gcs_pipeline.py": 50,
  "tests/scale/test_multihost.py::test_two_processes_match_one_process_with_four_devices": 26,
  "tests/reliability/test_resume.py": 24,
  "tests/nnx/test_training.py::test_nnx_model_pipeline_interrupted_resumed_exported": 13,
  "tests/core/test_dkm_fast.py": 13,
  "tests/nnx/test_sharded.py::test_sharded_nnx_step_equals_one_device_and_restores_on_another_mesh":
    11,
  "tests/core/test_dkm.py": 10,
  "tests/core/test_kmeans.py": 10,
  "tests/nnx/test_convert.py": 11,
  "tests/core/test_kmeans_bounds.py": 9,
  "tests/train/test_recipe_options.py::test_pipeline_with_every_option_on": 9,
  "tests/test_examples.py::test_own_model_example": 9,
  "tests/train/test_pipeline.py::test_embedded_pipeline_runs_every_stage": 8,
  "tests/scale/test_sharded_step.py::test_sharded_quantize_step_matches_single_device": 8,
  "tests/gcs/test_gcs_prepare.py::test_prepare_reads_tars_from_a_bucket_and_writes_tfrecords_there": 8,
  "tests/nnx/test_readme.py::test_readme_nnx_snippet_runs": 8,
  "tests/nnx/test_transformer.py::test_train_step_export_load": 7,
  "tests/train/test_dkm_refresh.py::test_sharded_step_with_carried_lists_and_offsets_equals_one_device":
    7,
  "tests/test_export.py::test_resnet18_roundtrip_and_bytes_equal_accounting": 6,
  "tests/nnx/test_linen_view.py::test_quantize_stage_matches_linen_soft_and_hard": 5,
  "tests/nnx/test_linen_view.py::test_train_steps_of_the_training_system_match_linen": 5,
  "tests/train/test_dim_select.py": 5,
  "tests/scale/test_sharded_eval.py::test_sharded_hard_codes_match_one_device_per_batch_evaluation":
    5,
  "tests/train/test_run_config.py::test_rerun_with_another_config_stops_with_the_fields": 4,
  "tests/train/test_dkm_refresh.py::test_three_steps_with_refresh_two_carry_the_lists": 4,
  "tests/core/test_kmeans_seeding.py::test_own_seeding_is_deterministic_and_within_2pct_of_full_data_seeding":
    5,  # per parametrization (2)
  "tests/test_export.py::test_plain_model_roundtrip": 3,  # per parametrization (2)
  "tests/nn/test_recorded.py::test_artifact_decodes_to_the_evaluated_model_with_or_without_config":
    2,  # per parametrization (4)
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
