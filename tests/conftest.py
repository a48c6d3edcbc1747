"""Test-wide settings: private temp dirs, a cheaper PRNG, one XLA compilation cache for the run.

XLA:CPU compiles threefry-based inits of a ResNet several times slower than "rbg"; the tests
compare runs against each other, never against fixed random values, so the generator is free.
The suite compiles the same programs over and over (the quick digits stages in dozens of
subprocesses): a persistent compilation cache, fresh for each run of the suite and shared by its
processes (pytest-xdist workers too), turns every repeat into a load of the same executable.
What is left is mostly XLA:CPU compiling programs that then run for milliseconds, so the suite
compiles at XLA's backend optimization level 0 (LLVM's code generation effort; the programs'
semantics are the same): ~15-20% less CPU on the training tests, e.g. tests/train/test_pipeline.py
with tests/nnx/test_readme.py 73 -> 57 CPU-s. It also turns off XLA:CPU's MLIR fusion emitters
(XLA:CPU's older LLVM IR emitters generate the same fusions): compile CPU of the digits CNN's six steps
16.3 -> 5.1 s (benchmarks/results/test_compile_flags.txt), whole modules (CPU s incl. children,
2-core EPYC) tests/core/test_kmeans.py 44.5 -> 31.7, test_dkm.py 37.7 -> 28.2,
tests/nnx/test_linen_view.py 54.4 -> 36.8. Tests compare runs of the suite with each other, all
under the same flags, never with numbers recorded under other flags.
NumPy's OpenBLAS threads spin for a while after each call before they sleep, burning the other
core of a 2-core machine: OPENBLAS_THREAD_TIMEOUT=4 (its shortest wait) puts them to sleep at once,
same threads, same results (`lr2vq plan`, a NumPy k-means: 12.1 -> 7.1 CPU s, identical output).
It must be set before NumPy loads; nothing imports it before this file.
Subprocesses inherit all five settings through the environment.
"""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
# One cache per run of the suite: xdist workers share their controller's run id.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
_CACHE = os.path.join(tempfile.gettempdir(), f"lr2vq-tests-xla-cache-{_RUN[:16]}")
os.makedirs(_CACHE, exist_ok=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
_TMP = tempfile.mkdtemp(prefix="lr2vq-tests-")
os.environ["TMPDIR"] = _TMP
tempfile.tempdir = _TMP

import jax  # noqa: E402
import pytest  # noqa: E402

from tests.support import devices, schedule, shared_runs  # noqa: E402

jax.config.update("jax_default_prng_impl", os.environ["JAX_DEFAULT_PRNG_IMPL"])
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
  "jax_persistent_cache_min_compile_time_secs",
  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)


def _quick_run_cmd(base: Path) -> tuple[list[str], dict[str, str]]:
  cmd = devices.main_cmd(base / "run", "--config.stages=float,lowrank,quantize")
  env = devices.child_env(1, base)
  # This process's XLA_FLAGS as they are (one CPU device unless they say otherwise): the flags are
  # part of the compilation cache key, and the in-process and CLI runs of the quick config see
  # these, so they reuse this run's compilations (and the gs:// test compares against it).
  env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
  return cmd, env


# The background quick run: trained once per run of the suite, by one pytest-xdist worker for all.
_QUICK_RUN = shared_runs.BackgroundRun("quick_run", _quick_run_cmd)


def pytest_collection_modifyitems(config, items):
  """Under pytest-xdist: a module at a time, the longest first (tests/support/schedule.py)."""
  if os.environ.get("PYTEST_XDIST_WORKER"):
    schedule.order_for_workers(items)


def pytest_collection_finish(session):
  """When a selected test needs `quick_run`, it starts training now, in the background, beside
  the tests that run first (under pytest-xdist, one worker trains it for all)."""
  if not any("quick_run" in getattr(item, "fixturenames", ()) for item in session.items):
    return
  if session.config.getoption("collectonly"):
    return
  _QUICK_RUN.start(session.config)


def pytest_sessionfinish(session, exitstatus):
  """The background quick run, if this process trains it, is waited for (another worker may still
  need it) or, when the session was interrupted, stopped. The run's compilation cache goes with
  the run (xdist: when the controller finishes)."""
  interrupted = (
    exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail
  )
  _QUICK_RUN.stop(wait=not interrupted)
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def quick_run(request) -> Path:
  """The quick digits pipeline's float, lowrank and quantize stages (configs/default.py:quick),
  trained once per run of the suite by the training entry point in one process on one device
  (started at collection when a selected test needs it). Read-only: tests that train on from it
  copy it first (`devices.copy_workdir`)."""
  return _QUICK_RUN.result(request.config) / "run"
