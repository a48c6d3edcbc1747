"""8 simulated devices: a sharded NNX train step equals one device; orbax restores on a new mesh.

Rows of Z (and their Adam moments) are split over the `data` axis and the layers' DKM runs in
`shard_map` over it, as on the linen side. The 8-device and 1-device runs start from one initial
state (built once, placed on each mesh by its sharding names) and do the same math in other
summation orders, so they agree to rounding (first step 1e-5; the linen sharded-step test explains
why later steps drift further), not bit for bit.
"""

from __future__ import annotations

import json
import textwrap

from tests.support.devices import run_script

CHILD = textwrap.dedent(
  """
  import json, sys
  import jax, jax.numpy as jnp, numpy as np, optax
  import orbax.checkpoint as ocp
  from flax import nnx
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  import lr2vq_jax as lq
  from tests.support.nnx_models import ConvNet

  # conv1 (432 weights / m 9) and conv2 (1152 / 24): both a 48 × 4 Z (6 rows a device), one
  # k-means program for the two.
  RULES = [lq.Rule("conv1", k=8, m=9, d=4), lq.Rule("conv2", k=8, m=24, d=4),
           lq.Rule("fc", k=4, m=4, d=2)]
  x = jax.random.normal(jax.random.key(1), (16, 8, 8, 3))
  y = jnp.arange(16) % 10

  def build(mesh):  # the quantized model and its optimizer, built once (k-means) on 8 devices
    with jax.set_mesh(mesh):
      model = lq.nnx.quantize_model(ConvNet(nnx.Rngs(0)), RULES, "quantize", key=jax.random.key(2),
                                    config=lq.QuantConfig(shard_axis="data", commitment=0.1))
      optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    return nnx.split((model, optimizer))

  def mesh_of(n):
    return jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])

  graphdef, built = build(mesh_of(8))
  host = jax.device_get(built)

  def place(mesh):  # the same initial state, laid out by the variables' sharding names on `mesh`
    shardings = nnx.get_named_sharding(built, mesh)
    return jax.device_put(host, shardings), shardings

  def run(n):
    mesh = mesh_of(n)
    state, shardings = place(mesh)

    def step(state, x, y):
      model, optimizer = nnx.merge(graphdef, state)
      model.train()
      def loss_fn(model):
        logits, losses = nnx.capture(model, lq.nnx.Losses)(x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + lq.nnx.sum_losses(losses)
      loss, grads = nnx.value_and_grad(loss_fn)(model)
      optimizer.update(model, grads)
      return nnx.state((model, optimizer)), loss

    batch = NamedSharding(mesh, P("data"))
    jitted = jax.jit(step, in_shardings=(shardings, batch, batch),
                     out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=0)
    with jax.set_mesh(mesh):
      xb, yb = jax.device_put(x, batch), jax.device_put(y, batch)
      traced = jitted.trace(state, xb, yb)  # one trace: read for shard_map, then compiled
      text, compiled = str(traced.jaxpr), traced.lower().compile()
      losses = []
      for _ in range(3):
        state, loss = compiled(state, xb, yb)
        losses.append(float(loss))
    model, _ = nnx.merge(graphdef, state)
    z = model.conv2.kernel.z[...]
    return state, mesh, {"losses": losses, "z_spec": str(z.sharding.spec),
                         "shard_map": "shard_map" in text, "z": np.asarray(z).tolist()}

  state8, mesh8, eight = run(8)
  _, _, one = run(1)
  ckpt = ocp.StandardCheckpointer()
  path = sys.argv[1] + "/ckpt"
  ckpt.save(path, state8)
  ckpt.wait_until_finished()
  shardings2 = nnx.get_named_sharding(built, mesh_of(2))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          built, shardings2)
  restored = ckpt.restore(path, abstract)
  same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))),
                      jax.tree.leaves(restored), jax.tree.leaves(state8))
  leaves = {jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_leaves_with_path(restored)}
  z_key = next(k for k in leaves if "conv2" in k and "'z'" in k and "opt" not in k.lower())
  print(json.dumps({"eight": eight, "one": one, "restored_equal": all(same),
                    "restored_devices": len(leaves[z_key].sharding.device_set),
                    "restored_spec": str(leaves[z_key].sharding.spec)}))
  """
)


def test_sharded_nnx_step_equals_one_device_and_restores_on_another_mesh(tmp_path):
  stdout = run_script(CHILD, str(tmp_path), devices=8, tmp=tmp_path)
  out = json.loads(stdout.strip().splitlines()[-1])
  eight, one = out["eight"], out["one"]
  assert eight["z_spec"] == "P('data', None)" and eight["shard_map"]
  assert abs(eight["losses"][0] - one["losses"][0]) < 1e-5
  assert max(abs(a - b) for a, b in zip(eight["losses"], one["losses"], strict=True)) < 1e-4
  z8, z1 = (sum(map(abs, sum(r["z"], []))) for r in (eight, one))
  assert abs(z8 - z1) / z1 < 1e-4
  assert out["restored_equal"] and out["restored_devices"] == 2
  assert out["restored_spec"] == "P('data', None)"
