"""TensorBoard event files without TensorFlow: scalars, the HParams record and their log lines.

Writes what clu's default writer (tf.summary) wrote: one event per scalar, a float32 tensor with the
scalars plugin's metadata, and the hparams plugin's session-start record at step 0, framed by
tensorboard's TF-free protos and record writer, so a training run never imports TensorFlow. The
scalars are also logged (absl INFO, clu's LoggingWriter format) on every process. A local folder
gets an appended file; object stores cannot append, so on `gs://` each write uploads the whole
(small) file again.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from lr2vq_jax import paths

_SCALARS_METADATA = summary_pb2.SummaryMetadata(
  plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
)
_FILE_IDS = itertools.count()


def _file_name() -> str:
  """`events.out.tfevents.<time>.<host>.<pid>.<n>.v2`, as tf.summary names them."""
  return (
    f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
    f".{next(_FILE_IDS)}.v2"
  )


def _scalar_value(tag: str, value: float) -> summary_pb2.Summary.Value:
  """A float32 0-d tensor summary with the scalars plugin's metadata (tf.summary.scalar's)."""
  tensor = tensor_pb2.TensorProto(
    dtype=types_pb2.DT_FLOAT,
    tensor_shape=tensor_shape_pb2.TensorShapeProto(),
    tensor_content=np.asarray(value, "<f4").tobytes(),
  )
  return summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=_SCALARS_METADATA)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested mappings and sequences as dotted keys (`{"a": {"b": [1]}}` → `{"a.b.0": 1}`), None
  as "" (clu's flattening of hparams)."""
  out: dict[str, Any] = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping) or hasattr(v, "items"):
      out.update(flatten(v, key + "."))
    elif isinstance(v, list | tuple):
      out.update(flatten({str(i): x for i, x in enumerate(v)}, key + "."))
    else:
      out[key] = "" if v is None else v
  return out


class SummaryWriter:
  """Scalars and hparams to a new event file in `logdir` (none if `logdir` is None) and the log."""

  def __init__(self, logdir: str | None):
    self.path = None if logdir is None else paths.join(logdir, _file_name())
    self._remote = self.path is not None and paths.is_remote(self.path)
    self._records: RecordWriter | None = None
    if self.path is not None:
      self._stream = io.BytesIO() if self._remote else open(self.path, "ab")  # noqa: SIM115
      self._records = RecordWriter(self._stream)
      self._write([event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")])

  def _write(self, events: list[event_pb2.Event]) -> None:
    for event in events:
      self._records.write(event.SerializeToString())
    if self._remote:  # no append on object stores: one upload of the whole file
      paths.write_bytes(self.path, self._stream.getvalue())
    else:
      self._records.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, int | float]) -> None:
    """Logs `scalars` at `step` and writes one event per scalar."""
    text = [
      f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(scalars.items())
    ]
    logging.info("[%d] %s", step, ", ".join(text))
    if self._records is not None:
      summaries = [summary_pb2.Summary(value=[_scalar_value(k, v)]) for k, v in scalars.items()]
      self._write(
        [event_pb2.Event(wall_time=time.time(), step=int(step), summary=s) for s in summaries]
      )

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Logs `hparams` and writes TensorBoard's HParams record (nested keys dotted)."""
    logging.info("[Hyperparameters] %s", hparams)
    if self._records is not None:
      summary = hparams_summary.hparams_pb(flatten(hparams))
      self._write([event_pb2.Event(wall_time=time.time(), step=0, summary=summary)])

  def flush(self) -> None:
    logging.flush()

  def close(self) -> None:
    if self._records is not None and not self._records.closed:
      self._records.close()
    self.flush()
