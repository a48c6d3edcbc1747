"""Checkpointer: bit-exact round trips with meta, retention, and restore onto another mesh."""

import textwrap

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr2vq_jax.train.checkpointing import (
  Checkpointer,
  CheckpointMismatchError,
  abstract_like,
  checkpoint_dir,
)
from tests.support.devices import run_script


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: dict
  opt: tuple
  rng: jax.Array


def _state(seed=0):
  k = jax.random.key(seed)
  return _State(
    step=jnp.int32(7 + seed),
    params={
      "w": jax.random.normal(k, (5, 3)),
      "b": jnp.arange(3, dtype=jnp.bfloat16) / 3,
      "codes": jnp.arange(6, dtype=jnp.uint8),
    },
    opt=(jnp.float32(0.125), jnp.zeros((2,), jnp.int32)),
    rng=jax.random.fold_in(k, 1),
  )


def _assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_dataclass_round_trip_is_bit_exact(tmp_path):
  state = _state()
  meta = {
    "stage": "finetune",
    "model": "resnet18",
    "config_digest": "abc123",
    "nested": {"k": [1, 2]},
  }
  with Checkpointer(checkpoint_dir(tmp_path)) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(10, state, meta)
    restored, meta2 = ckpt.restore(abstract_state=abstract_like(state))
  assert isinstance(restored, _State)
  _assert_tree_equal(restored, state)
  assert meta2 == meta


def test_dict_round_trip_latest_and_retention(tmp_path):
  ckpt = Checkpointer(tmp_path / "ck", max_to_keep=2)
  states = {s: {"a": jnp.full((4,), s, jnp.float32), "n": jnp.int32(s)} for s in (1, 2, 3)}
  for s, st in states.items():
    ckpt.save(s, st, {"step": s})
  assert ckpt.latest_step() == 3 and ckpt.all_steps() == [2, 3]
  abstract = abstract_like(states[1])
  restored, meta = ckpt.restore(2, abstract_state=abstract)
  _assert_tree_equal(restored, states[2])
  assert meta == {"step": 2} and ckpt.restore_meta() == {"step": 3}
  with pytest.raises(FileNotFoundError):
    ckpt.restore(1, abstract_state=abstract)
  ckpt.close()
  # A new Checkpointer on the same directory (a resumed run) sees the same steps.
  reopened = Checkpointer(tmp_path / "ck", max_to_keep=2)
  assert reopened.latest_step() == 3 and reopened.restore_meta(2) == {"step": 2}
  reopened.close()


def test_async_save_then_wait(tmp_path):
  ckpt = Checkpointer(tmp_path, async_=True)
  state = _state(1)
  ckpt.save(5, state, {"stage": "a"})
  ckpt.wait()
  restored, _ = ckpt.restore(5, abstract_state=abstract_like(state))
  _assert_tree_equal(restored, state)
  ckpt.close()


def test_empty_directory_raises(tmp_path):
  ckpt = Checkpointer(tmp_path)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    ckpt.restore_meta()
  ckpt.close()


_RESHARD = textwrap.dedent(
  """
  import sys
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from lr2vq_jax.train.checkpointing import Checkpointer
  assert jax.device_count() == 8, jax.devices()
  mesh8 = jax.make_mesh((8,), ("data",))
  mesh4 = jax.make_mesh((2, 2), ("data", "model"), devices=jax.devices()[:4])
  host = {"w": np.arange(64 * 6, dtype=np.float32).reshape(64, 6), "c": np.arange(16, dtype=np.int32)}
  state = {
    "w": jax.device_put(host["w"], NamedSharding(mesh8, P("data", None))),
    "c": jax.device_put(host["c"], NamedSharding(mesh8, P())),
  }
  ckpt = Checkpointer(sys.argv[1])
  ckpt.save(3, state, {"mesh": "8"})
  ckpt.wait()
  targets = {"w": NamedSharding(mesh4, P("model", "data")), "c": NamedSharding(mesh4, P("data"))}
  abstract = {k: jax.ShapeDtypeStruct(host[k].shape, host[k].dtype, sharding=targets[k]) for k in host}
  restored, meta = ckpt.restore(abstract_state=abstract)
  for k in host:
    assert restored[k].sharding == targets[k], (k, restored[k].sharding)
    assert len(restored[k].sharding.device_set) == 4
    np.testing.assert_array_equal(np.asarray(restored[k]), host[k])
  assert meta == {"mesh": "8"}
  ckpt.close()
  print("RESHARD_OK")
  """
)


def test_restore_onto_another_mesh(tmp_path):
  out = run_script(_RESHARD, str(tmp_path / "ck"), devices=8, tmp=tmp_path, timeout=120)
  assert "RESHARD_OK" in out, out


def test_restoring_into_other_shapes_is_one_clear_error(tmp_path):
  ckpt = Checkpointer(checkpoint_dir(str(tmp_path)))
  ckpt.save(1, _state(), {"stage": "x"}, force=True)
  ckpt.wait()
  other = _state()
  other = other.replace(params={**other.params, "w": jnp.zeros((5, 4))})  # another d̃, say
  with pytest.raises(CheckpointMismatchError, match=r"step 1 .* does not fit this config"):
    ckpt.restore(1, abstract_state=abstract_like(other))
  assert "new --workdir" in CheckpointMismatchError.hint
  ckpt.close()
