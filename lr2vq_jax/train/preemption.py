"""Graceful preemption: SIGTERM asks the running stage to checkpoint and stop."""

import signal


class Preemption:
  """SIGTERM sets a flag; the loop checkpoints at the current step and exits cleanly.

  The flag is process-wide and nests: a notice that arrives outside a loop (set-up, evaluation,
  between stages under `pipeline.run`'s guard) still stops the next loop or stage. The outermost
  guard clears it on entry.
  """

  _flag = False
  _depth = 0

  def __init__(self):
    self._previous = None

  @property
  def requested(self) -> bool:
    return Preemption._flag

  def __enter__(self):
    if Preemption._depth == 0:
      Preemption._flag = False
    Preemption._depth += 1
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def _handle(self, *_):
    Preemption._flag = True

  def __exit__(self, *exc):
    Preemption._depth -= 1
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
