"""The project's only Orbax user: step checkpoints of a state pytree plus a JSON `meta` record.

`meta` (stage, model name, config digest, ...) lets a later stage check that it is pointed at the
right kind of checkpoint before loading the state. The state restores onto the shardings carried
by an abstract state, so a checkpoint written on one mesh loads onto another. Every process must
call `save` and `restore` (Orbax coordinates the hosts). Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from lr2vq_jax import paths

_STATE, _META = "state", "meta"


def checkpoint_dir(workdir: str | os.PathLike) -> str:
  """Where a run keeps its checkpoints: `<workdir>/checkpoints` (local or gs://)."""
  return paths.join(workdir, "checkpoints")


def committed_steps(directory: str | os.PathLike) -> list[int]:
  """Steps orbax considers finished under `directory`, ascending; reads only, creates nothing.

  Locally orbax renames a finished step folder into place; on gs:// (no atomic rename) a step
  is finished only once `<step>/commit_success.txt` exists, so a digit-named folder proves nothing.
  """
  return sorted(ocp.utils.checkpoint_steps(paths.resolve(directory)))


def latest_meta(directory: str | os.PathLike) -> dict[str, Any] | None:
  """The JSON meta of the newest committed step under `directory`, or None; reads only."""
  root = paths.resolve(directory)
  for step in reversed(committed_steps(root)):
    try:
      return json.loads((root / str(step) / _META / "metadata").read_text())
    except (OSError, ValueError):
      continue
  return None


def abstract_like(tree: Any) -> Any:
  """`jax.ShapeDtypeStruct`s (with shardings) for the arrays of `tree`, other leaves unchanged."""

  def one(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x

  return jax.tree.map(one, tree)


class CheckpointMismatchError(ValueError):
  """A checkpoint written with other shapes than the config asks for (another d̃, preset...)."""

  hint = (
    "use a new --workdir (with the stage's init_from pointing at the stage to start from), "
    "or the config that wrote the checkpoint"
  )


class Checkpointer:
  """Keeps the last `max_to_keep` step checkpoints of (state, meta) under `directory`."""

  def __init__(
    self, directory: str | os.PathLike, *, max_to_keep: int | None = 3, async_: bool = False
  ):
    self.directory = paths.resolve(directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=async_,
      cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=(_STATE, _META)
    )

  def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
    """Saves `state` (any pytree of arrays/scalars) and JSON `meta` at `step`; True if written."""
    args = ocp.args.Composite(
      **{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(dict(meta))}
    )
    return self._manager.save(int(step), args=args, force=force)

  def latest_step(self) -> int | None:
    """The newest finished checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all kept checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else int(step)
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}")
    return step

  def restore(self, step: int | None = None, *, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """(state, meta) at `step` (default latest), placed on `abstract_state`'s shardings.

    `abstract_state` has the structure of the saved state, with `jax.ShapeDtypeStruct` leaves that
    carry the target `.sharding` (see `abstract_like`, or `jax.eval_shape` plus shardings).
    """
    step = self._step(step)
    args = ocp.args.Composite(
      **{_STATE: ocp.args.StandardRestore(abstract_state), _META: ocp.args.JsonRestore()}
    )
    try:
      restored = self._manager.restore(step, args=args)
    except ValueError as e:
      if "shape" not in str(e):
        raise
      raise CheckpointMismatchError(
        f"checkpoint step {step} in {self.directory} does not fit this config's shapes "
        f"({str(e).split('.')[0]}): it was written with another d̃, preset or model"
      ) from None
    return restored[_STATE], dict(restored[_META])

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    """The JSON meta record at `step` (default latest), without reading the state."""
    step = self._step(step)
    restored = self._manager.restore(
      step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
    )
    return dict(restored[_META])

  def wait(self) -> None:
    """Blocks until an asynchronous save has been committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
