"""Sharding rules of the train state (pure: abstract meshes, no devices needed)."""

from __future__ import annotations

import jax
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from lr2vq_jax.train import partitioning as part

MESH8 = AbstractMesh((8,), ("data",))
MESH1 = AbstractMesh((1,), ("data",))


@pytest.mark.parametrize(
  "path,shape,spec",
  [
    ("params/conv3/z", (8192, 3), P("data", None)),
    ("opt_state/0/mu/conv3/z", (8192, 3), P("data", None)),
    ("opt_state/0/nu/layer1_0/conv1/z", (9216, 4), P("data", None)),
    ("model_state/quant/fc/codes", (1280,), P("data")),
    ("params/conv3/z", (8190, 3), P()),  # n not divisible by 8: replicated
    ("params/conv3/codebook", (16, 3), P()),
    ("params/conv3/kernel", (3, 3, 64, 128), P()),
    ("params/fc/bias", (10,), P()),
    ("step", (), P()),
  ],
)
def test_replicated_mode_shards_only_z_and_codes(path, shape, spec):
  assert part.spec_for(path, shape, MESH8) == spec


def test_fsdp_splits_large_tensors_on_their_largest_divisible_axis():
  assert part.spec_for("params/conv3/kernel", (3, 3, 64, 128), MESH8, "fsdp") == P(
    None, None, None, "data"
  )
  assert part.spec_for("params/fc/kernel", (2048, 1000), MESH8, "fsdp") == P("data", None)
  assert part.spec_for("params/fc/bias", (1000,), MESH8, "fsdp") == P()  # small: replicated
  assert part.spec_for("params/x/kernel", (999, 37), MESH8, "fsdp") == P()  # nothing divides
  assert part.spec_for("params/conv3/z", (8192, 3), MESH8, "fsdp") == P("data", None)
  assert part.spec_for("params/conv3/kernel", (3, 3, 64, 128), MESH1, "fsdp") == P()
  with pytest.raises(ValueError, match="sharding"):
    part.spec_for("params/fc/kernel", (8, 8), MESH8, "zero3")


def test_with_state_shardings_uses_tree_paths():
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  shapes = {"params": {"conv": {"z": jax.ShapeDtypeStruct((16, 3), "float32")}}}
  out = part.with_state_shardings(shapes, mesh)
  assert out["params"]["conv"]["z"].sharding.spec == P("data", None)
