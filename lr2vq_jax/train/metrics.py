"""Metric logging: clu writers (TensorBoard + console) and a resumable `metrics.jsonl`.

Each JSONL row is `{"step": int, "stage": str | null, "scalars": {name: number}}`. Only the primary
process writes files. After a resume, `truncate_after(step)` drops rows the interrupted run wrote
past the restored step, so the file matches an uninterrupted run. The work dir may be `gs://`:
object stores cannot append, so there each row rewrites the whole (small) file in one upload.
clu (and through it TensorFlow) loads when the first logger or hook is made, not on import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from absl import logging

from lr2vq_jax import paths

if TYPE_CHECKING:
  from clu import metric_writers

JSONL_NAME = "metrics.jsonl"


def _to_json_number(value: Any) -> int | float:
  arr = np.asarray(value)
  if arr.size != 1:
    raise ValueError(f"scalar expected, got shape {arr.shape}")
  item = arr.reshape(()).item()
  if isinstance(item, bool | np.bool_):
    return int(item)
  return item if isinstance(item, int) else float(item)


class MetricsLogger:
  """Writes scalars to clu's default writer and appends them to `<workdir>/metrics.jsonl`."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    is_primary: bool | None = None,
    stage: str | None = None,
    asynchronous: bool = True,
  ):
    self.workdir = paths.as_str(workdir)
    self.is_primary = jax.process_index() == 0 if is_primary is None else bool(is_primary)
    self.stage = stage
    self.path = paths.join(self.workdir, JSONL_NAME)
    self._remote = paths.is_remote(self.workdir)
    if self.is_primary:
      paths.makedirs(self.workdir)
    self._rows_text = self._read_text() if self._remote and self.is_primary else ""
    from clu import metric_writers  # TensorBoard's writer: TensorFlow loads here

    self.writer = metric_writers.create_default_writer(
      self.workdir if self.is_primary else None,
      just_logging=not self.is_primary,
      asynchronous=asynchronous,
    )

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Logs `scalars` (numbers or 0-d/1-element arrays) at `step`."""
    values = {k: _to_json_number(v) for k, v in scalars.items()}
    self.writer.write_scalars(int(step), values)
    if self.is_primary:
      line = json.dumps({"step": int(step), "stage": self.stage, "scalars": values}) + "\n"
      if self._remote:  # no append on object stores: one upload of the whole file
        self._rows_text += line
        paths.write_text(self.path, self._rows_text)
      else:
        with open(self.path, "a", encoding="utf-8") as f:
          f.write(line)
          f.flush()

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Records hyperparameters with the clu writer (TensorBoard HParams)."""
    self.writer.write_hparams(dict(hparams))

  def _read_text(self) -> str:
    path = paths.resolve(self.path)
    return path.read_text(encoding="utf-8") if path.exists() else ""

  def read_rows(self) -> list[dict[str, Any]]:
    """All rows of the JSONL file (empty if none)."""
    rows = []
    for line in self._read_text().splitlines():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:  # a row cut short by a kill mid-write: dropped on resume
        continue
    return rows

  def truncate_after(self, step: int) -> int:
    """Drops this stage's rows with step > `step` (atomic rewrite); returns how many were dropped."""
    if not self.is_primary or not paths.resolve(self.path).exists():
      return 0
    rows = self.read_rows()
    keep = [
      r for r in rows if r["step"] <= step or (self.stage is not None and r["stage"] != self.stage)
    ]
    if len(keep) == len(rows):
      return 0
    text = "".join(json.dumps(r) + "\n" for r in keep)
    paths.write_text(self.path, text)
    self._rows_text = text if self._remote else ""
    return len(rows) - len(keep)

  def flush(self) -> None:
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()

  def __enter__(self) -> MetricsLogger:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class StepTrace:
  """A `jax.profiler` trace of `num_steps` train steps, written under `logdir/plugins/profile/`
  (TensorBoard's Profile tab, or Perfetto for the `.trace.json.gz`).

  Call it as `trace(step)` after every step: it starts once step `after_step` is done (the first
  step of a run compiles, which would swamp the trace) and stops `num_steps` steps later, or at
  `close()` if the run ends first. The steps are dispatched asynchronously: the trace holds what
  the host and devices did in that window.
  """

  def __init__(self, logdir: str | os.PathLike, num_steps: int, after_step: int):
    self.logdir = paths.as_str(logdir)
    self.num_steps = int(num_steps)
    self.after_step = int(after_step)
    self.running = False

  def __call__(self, step: int) -> None:
    if step == self.after_step and self.num_steps > 0 and not self.running:
      try:
        jax.profiler.start_trace(self.logdir)
      except (RuntimeError, ValueError, OSError) as e:  # e.g. a trace already running: train on
        logging.warning("profile_steps: no trace (%s)", e)
        return
      self.running = True
    elif self.running and step >= self.after_step + self.num_steps:
      self.close()

  def close(self) -> None:
    if self.running:
      jax.profiler.stop_trace()
      self.running = False


class Hooks(list):
  """Hooks to call as `hook(step)` after every train step; `close()` ends what one left running
  (a trace cut short by the end of the run)."""

  def close(self) -> None:
    for hook in self:
      if isinstance(hook, StepTrace):
        hook.close()


def periodic_hooks(
  workdir: str | os.PathLike,
  *,
  num_train_steps: int,
  writer: metric_writers.MetricWriter | None = None,
  is_primary: bool | None = None,
  progress_every_secs: float = 60.0,
  profile_steps: int = 0,
  first_step: int = 0,
) -> Hooks:
  """ReportProgress (steps/s, ETA) and, on the primary process with `profile_steps` > 0, a
  `StepTrace` of that many steps after the first step past `first_step` (a resumed run's start).

  Call each hook as `hook(step)` after every train step and `hooks.close()` at the end.
  """
  from clu import periodic_actions

  primary = jax.process_index() == 0 if is_primary is None else is_primary
  hooks = Hooks(
    [
      periodic_actions.ReportProgress(
        num_train_steps=num_train_steps, writer=writer, every_secs=progress_every_secs
      )
    ]
  )
  if primary and profile_steps > 0:
    hooks.append(StepTrace(workdir, profile_steps, after_step=first_step + 1))
  return hooks
