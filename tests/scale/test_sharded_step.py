"""8 simulated devices: Z rows and DKM sharded; the same first step as one device, then bounded.

Why not "same params after 3 steps to 1e-5": the two runs do the same math in other summation
orders (batch, BatchNorm, gradient and DKM sums split over 8 devices), so values differ by rounding
(~1e-7). The train step is not a contraction of such noise: about 4·10⁵ ReLU inputs per step are
O(1)-spread around 0, so every few steps one lies within rounding of the kink and switches side in
one run only; its BatchNorm channel's gradient then moves by ~1/(batch·positions) (~1e-5 absolute,
measured: one bn3 channel, every other channel of the layer within 1e-8). Adam passes that on as
parameter noise of up to ~lr, which is large relative to the still tiny BatchNorm biases (3 steps
of ~lr from zero). Measured with ONE device and the initial params perturbed by 1 ulp (no sharding
at all): after 3 steps 6.8e-5 whole-vector and 2.5e-3 on a BN bias; another AVX-512 machine saw
2.2e-4 and 8.9e-3 between 8 and 1 devices. So:
* tight where the math is deterministic: the initial state, the first step's loss and gradients
  (Adam's first moment after one step is exactly (1 − b1)·g) and params — a wrong shard is O(1);
* after 3 steps: per entry within Adam's hard bound (each update is at most ~1.004·lr for t ≤ 3,
  so two runs differ by at most 2.01·Σ lr_t), losses within 1e-4, the whole parameter vector
  within 1e-3 (4.5× the worst measured).
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

from tests.support.devices import child_env, run

CHILD = textwrap.dedent(
  """
  import dataclasses, json, sys
  import jax, numpy as np
  from configs.default import get_config
  from lr2vq_jax.train import input_pipeline, partitioning, trainer
  from lr2vq_jax.train.state import create_train_state
  from lr2vq_jax.train.step import learning_rate_schedule, make_train_step

  config = get_config("quick")
  base = trainer.build_stage(config, "quantize", sys.argv[1])
  assert jax.device_count() == 8 and base.mesh.shape["data"] == 8
  STEPS = 3

  def train(stage):
    target = trainer.abstract_state(stage)
    state = create_train_state(
      stage.model, stage.tx, stage.sample_input, stage.mesh, jax.random.key(0)
    )
    init = jax.device_get(state.params)
    step = partitioning.jit_train_step(
      make_train_step(stage.model, stage.cfg, stage.tx), target, stage.mesh
    )
    batches = input_pipeline.build_input(config.data, split="train", start_step=0)
    batch = partitioning.global_batch(next(batches), stage.mesh)
    with jax.set_mesh(stage.mesh):
      hlo = step.jitted.lower(state, batch).as_text()
    losses = []
    for t in range(STEPS):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
      if t == 0:  # Adam's first moment after one step is (1 - b1) * gradient
        grads = jax.device_get(state.opt_state[0].mu)
        first = jax.device_get(state.params)
      batch = partitioning.global_batch(next(batches), stage.mesh)
    return state, hlo, dict(init=init, grads=grads, first=first, losses=losses)

  sharded, hlo, a = train(base)
  single, _, b = train(dataclasses.replace(base, mesh=partitioning.make_mesh(1)))
  a["last"], b["last"] = jax.device_get(sharded.params), jax.device_get(single.params)

  def rel(x, y):
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))

  def total(x, y):
    sq = lambda t: sum(float(np.sum(np.square(v))) for v in jax.tree.leaves(t))
    return (sq(jax.tree.map(lambda u, v: u - v, x, y)) / sq(y)) ** 0.5

  out = {}
  for key in ("init", "grads", "first", "last"):
    out[key] = {"leaves": jax.tree.map(rel, a[key], b[key]), "total": total(a[key], b[key])}
  # Adam's first update per entry: lr0·g/(|g| + eps), g = mu/(1 - b1). Entries with |g| well
  # above eps move by ±lr0 whatever the rounding; the rest by lr0·Δg/eps at most (slope 1/eps).
  lr0, eps, b1 = float(learning_rate_schedule(base.cfg, base.num_steps)(0)), 1e-8, 0.9

  def resolved(p, q, ga, gb):
    keep = np.minimum(np.abs(ga), np.abs(gb)) >= 100 * (1 - b1) * eps
    return rel(np.where(keep, p, 0), np.where(keep, q, 0))

  def excess(p, q, ga, gb):
    return float(np.max(np.abs(p - q) - lr0 * np.abs(ga - gb) / ((1 - b1) * eps)))

  pairs = (a["first"], b["first"], a["grads"], b["grads"])
  out["first_resolved"] = jax.tree.map(resolved, *pairs)
  out["first_excess"] = jax.tree.map(excess, *pairs)
  diff = jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a["last"], b["last"])
  out["last"]["max_abs"] = diff
  out["losses"] = [a["losses"], b["losses"]]
  lr = learning_rate_schedule(base.cfg, base.num_steps)
  out["lr_sum"] = float(sum(lr(t) for t in range(STEPS)))
  out["specs"] = {
    "z": str(sharded.params["conv3"]["z"].sharding.spec),
    "z_mu": str(sharded.opt_state[0].mu["conv3"]["z"].sharding.spec),
    "codebook": str(sharded.params["conv3"]["codebook"].sharding.spec),
    "z_shard_rows": sharded.params["conv3"]["z"].addressable_shards[0].data.shape[0],
  }
  out["manual"] = hlo.count("sdy.manual_computation")
  print("RESULT " + json.dumps(out))
  """
)


@pytest.mark.slow
def test_sharded_quantize_step_matches_single_device(tmp_path):
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  out = run(
    [sys.executable, str(script), str(tmp_path / "w")], child_env(8, tmp_path), tmp_path / "log"
  )
  result = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
  specs = result["specs"]
  assert specs["z"] == str(P("data", None))
  assert specs["z_mu"] == str(P("data", None))  # Adam moments follow their param
  assert specs["codebook"] == str(P())
  assert specs["z_shard_rows"] == 8192 // 8
  assert result["manual"] >= 2  # one shard_map DKM per quantized layer (conv2, conv3)
  # Deterministic up to rounding: the same initial state (random init, τ from a sharded mean).
  assert max(_flat(result["init"]["leaves"]).values()) <= 1e-6, result["init"]
  # Step 1 from that state. Loss: measured equal to the last bit. Gradients: worst leaf 1.8e-5,
  # whole vector 9.7e-6 (the DKM codebooks: soft assignments are exp(-d/τ) with d/τ ~ 100, so
  # 1e-7 rounding in the distances is ~1e-5 in the attention); bounds 10× that. A wrong shard
  # (a DKM or BatchNorm sum over one device's rows only) is O(1).
  (loss_a, *_), (loss_b, *_) = result["losses"]
  assert abs(loss_a - loss_b) <= 1e-6 * abs(loss_b), result["losses"]
  assert max(_flat(result["grads"]["leaves"]).values()) <= 2e-4, result["grads"]
  assert result["grads"]["total"] <= 1e-4, result["grads"]
  # Params after step 1: Adam's first update is lr·g/(|g| + ε), ±lr where |g| ≫ ε: there the
  # runs agree to rounding (measured worst leaf 9e-8). Where |g| ≲ ε (a z row DKM barely moves,
  # |g| ~ 1e-11..1e-9) the slope is lr/ε = 1e5, so the gradients' rounding difference (~1e-9
  # absolute, the 1e-5 relative above) moves such an entry by up to ~lr: one of conv3/z's 32768
  # entries measured 7.6e-4 apart (leaf 1e-4 relative), on both the old and the fast DKM path. So:
  # ≤ 1e-5 on the entries with |g| ≥ 100ε in both runs, and everywhere no more than Adam's slope
  # makes of the gradient difference (measured excess 2.3e-10; a wrong shard is O(1) in both).
  assert max(_flat(result["first_resolved"]).values()) <= 1e-5, result["first_resolved"]
  assert max(_flat(result["first_excess"]).values()) <= 1e-7, result["first_excess"]
  assert result["first"]["total"] <= 1e-3, result["first"]
  # After 3 steps (see the module docstring): Adam's hard bound per entry, and measured margins.
  bound = 2.01 * result["lr_sum"]
  worst = max(_flat(result["last"]["max_abs"]).values())
  assert worst <= bound, (worst, bound)
  for la, lb in zip(*result["losses"], strict=True):
    assert abs(la - lb) <= 1e-4 * abs(lb), result["losses"]
  assert result["last"]["total"] <= 1e-3, result["last"]


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}/"))
    else:
      out[prefix + k] = v
  return out
