"""LR²VQ on your own linen model: rules, low-rank pre-training, DKM fine-tuning, export, decode.

Run:       python examples/own_model.py [--quick]   (offline: generated data; about a minute on
           2 CPU cores, --quick a few seconds)
Expected:  float and LR²VQ accuracies on the generated task, and "decoded artifact == evaluated
           model" (the exported file rebuilds the exact model that was evaluated).
"""

import sys
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import lr2vq_jax as lq


class MyNet(nn.Module):
  """Any model written with plain flax.linen layers; its flag may have any name."""

  @nn.compact
  def __call__(self, x, training: bool = False):
    x = nn.relu(nn.Conv(16, (3, 3), name="stem")(x))
    x = nn.Conv(32, (3, 3), strides=2, use_bias=False, name="conv")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not training, name="bn")(x))
    return nn.Dense(4, name="head")(jnp.mean(x, axis=(1, 2)))


RULES = (  # first match wins, re.search on the module path
  lq.Rule(r"^stem$", skip=True),  # the first conv stays float
  lq.Rule(r"^conv$", k=32, m=9, d=3),  # 3×3 conv: subvectors of 9, 32 centroids, d̃ = 3
  lq.Rule(r"^head$", k=8, m=4, d=2),
)


def make_data(key, n=512):
  """8×8×3 images whose class is the quadrant holding a bright blob."""
  k1, k2 = jax.random.split(key)
  labels = jax.random.randint(k1, (n,), 0, 4)
  images = jax.random.normal(k2, (n, 8, 8, 3))
  half = jnp.arange(8) // 4  # which half each row / column is in
  top_left = (half[:, None] == (labels // 2)[:, None, None]) & (
    half[None] == (labels % 2)[:, None, None]
  )
  return images + top_left[..., None], labels


def fit(model, variables, x, y, steps, lr):
  """An optax loop: cross-entropy plus every sown loss (DKM's commitment) via `lq.sum_losses`."""
  tx = optax.adam(lr)
  params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}

  @jax.jit
  def step(params, state, opt):
    def loss_fn(params):
      logits, upd = model.apply(
        {"params": params, **state}, x, training=True, mutable=["batch_stats", "losses"]
      )
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return ce + lq.sum_losses(upd), upd

    (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), {**state, "batch_stats": upd["batch_stats"]}, opt

  opt = tx.init(params)
  for _ in range(steps):
    params, state, opt = step(params, state, opt)
  return {"params": params, **state}


def accuracy(logits, y) -> float:
  return float(100 * jnp.mean(jnp.argmax(logits, -1) == y))


def main(out_dir: str, steps: int = 150) -> dict:
  x, y = make_data(jax.random.key(0))
  model = MyNet()
  float_vars = fit(model, model.init(jax.random.key(1), x[:1]), x, y, steps, 1e-2)
  print(lq.describe(model, RULES, x[:1]))
  # projection (and store, DKM iterations) are recorded in the variables by the conversions;
  # commitment is a training knob of the quantized model: pass the config to it as well.
  config = lq.QuantConfig(projection="orthonormal", commitment=0.1)
  plan = lq.nn.plan_model(model, RULES, x[:1])
  lowrank = lq.convert.float_to_lowrank(float_vars, RULES, plan=plan, config=config)
  lowrank = fit(lq.quantize_model(model, RULES, "lowrank"), lowrank, x, y, steps, 1e-3)
  quant = lq.convert.lowrank_to_quantize(lowrank, RULES, key=jax.random.key(2), config=config)
  qmodel = lq.quantize_model(model, RULES, "quantize", config)  # soft DKM when training=True
  _, upd = qmodel.apply(quant, x, training=True, mutable=["batch_stats", "losses"])
  commitment = float(lq.sum_losses(upd))  # β·mean‖z − sg(C[a])‖², summed over layers
  quant = fit(qmodel, quant, x, y, steps, 1e-3)
  evaluated = jax.jit(qmodel.apply)(quant, x)  # hard codes: what the artifact ships
  manifest = lq.export(quant, RULES, out_dir)
  decoded = model.apply(lq.load(out_dir).decode(), x)  # plain variables for MyNet itself
  result = {
    "float_top1": accuracy(model.apply(float_vars, x), y),
    "lr2vq_top1": accuracy(evaluated, y),
    "max_abs_diff": float(jnp.max(jnp.abs(decoded - evaluated))),
    "payload_bytes": manifest["payload_bytes"]["total"],
    "commitment": commitment,
  }
  print(
    f"float top-1 {result['float_top1']:.1f}%, LR²VQ top-1 {result['lr2vq_top1']:.1f}%, "
    f"artifact {result['payload_bytes']} bytes; decoded artifact == evaluated model "
    f"(max |Δlogit| {result['max_abs_diff']:.1e})"
  )
  return result


if __name__ == "__main__":
  with tempfile.TemporaryDirectory() as tmp:
    main(tmp, steps=10 if "--quick" in sys.argv[1:] else 150)
