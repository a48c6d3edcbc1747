"""Metric logging: TensorBoard events + console (`event_writer`) and a resumable `metrics.jsonl`.

Each JSONL row is `{"step": int, "stage": str | null, "scalars": {name: number}}`. Only the primary
process writes files. After a resume, `truncate_after(step)` drops rows the interrupted run wrote
past the restored step, so the file matches an uninterrupted run. The work dir may be `gs://`:
object stores cannot append, so there each row rewrites the whole (small) file in one upload.
Neither TensorFlow nor clu is imported. The hooks run after every train step: `Progress` (steps/s,
ETA) and `StepTrace` (a profile).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from lr2vq_jax import paths
from lr2vq_jax.train.event_writer import SummaryWriter

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
  """Writes scalars to TensorBoard events and the log, and appends them to `metrics.jsonl`."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    is_primary: bool | None = None,
    stage: str | None = None,
  ):
    self.workdir = paths.as_str(workdir)
    self.is_primary = jax.process_index() == 0 if is_primary is None else bool(is_primary)
    self.stage = stage
    self.path = paths.join(self.workdir, JSONL_NAME)
    self._remote = paths.is_remote(self.workdir)
    if self.is_primary:
      paths.makedirs(self.workdir)
    self._rows_text = self._read_text() if self._remote and self.is_primary else ""
    self.writer = SummaryWriter(self.workdir if self.is_primary else None)

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
    """Records hyperparameters (TensorBoard HParams, nested keys dotted) and logs them."""
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


class Progress:
  """Logs steps/s, % done and ETA when `every_secs` have passed since the last report (and at the
  last step), and writes `steps_per_sec` and `uptime` scalars to `writer` if given."""

  def __init__(
    self, num_train_steps: int, writer: SummaryWriter | None = None, every_secs: float = 60.0
  ):
    self.num_train_steps = int(num_train_steps)
    self.writer = writer
    self.every_secs = float(every_secs)
    self.t0 = time.monotonic()
    self.last: tuple[int, float] | None = None  # (step, time) of the last report

  def __call__(self, step: int) -> bool:
    """Reports if due; the first call only starts the clock. Returns whether it reported."""
    now = time.monotonic()
    if self.last is None:
      self.last = (step, now)
      return False
    last_step, last_time = self.last
    due = now - last_time > self.every_secs or step == self.num_train_steps
    if not due or step == last_step:
      return False
    rate = (step - last_step) / max(now - last_time, 1e-9)
    eta = (self.num_train_steps - step) / rate
    hours, mins = divmod(round(eta / 60), 60)
    logging.info(
      "%.1f steps/s, %.1f%% (%d/%d), ETA: %dh%02dm",
      rate, 100 * step / self.num_train_steps, step, self.num_train_steps, hours, mins,
    )  # fmt: skip
    if self.writer is not None:
      self.writer.write_scalars(step, {"steps_per_sec": rate, "uptime": now - self.t0})
    self.last = (step, now)
    return True


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
  writer: SummaryWriter | None = None,
  is_primary: bool | None = None,
  progress_every_secs: float = 60.0,
  profile_steps: int = 0,
  first_step: int = 0,
) -> Hooks:
  """`Progress` (steps/s, ETA) and, on the primary process with `profile_steps` > 0, a
  `StepTrace` of that many steps after the first step past `first_step` (a resumed run's start).

  Call each hook as `hook(step)` after every train step and `hooks.close()` at the end.
  """
  primary = jax.process_index() == 0 if is_primary is None else is_primary
  hooks = Hooks([Progress(num_train_steps, writer=writer, every_secs=progress_every_secs)])
  if primary and profile_steps > 0:
    hooks.append(StepTrace(workdir, profile_steps, after_step=first_step + 1))
  return hooks
