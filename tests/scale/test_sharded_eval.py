"""4 simulated devices: evaluation's one-off hard codes split each layer's DKM over the data axis
and give the numbers of the unsharded, per-batch evaluation.

The sharded run sums the DKM numerators and denominators per device and then over devices
(`psum`): the refined centroids differ from one device's by rounding only, so codes agree except
for a row within rounding of two centroids, and the evaluation with them agrees.
"""

from __future__ import annotations

import json
import sys
import textwrap

from jax.sharding import PartitionSpec as P

from tests.support.devices import child_env, run

CHILD = textwrap.dedent(
  """
  import json, sys
  import jax, numpy as np
  from configs.default import get_config
  from lr2vq_jax.core import dkm
  from lr2vq_jax.train import hard_codes, input_pipeline, partitioning, trainer
  from lr2vq_jax.train.step import make_eval_step

  config = get_config("quick")
  stage = trainer.build_stage(config, "quantize", sys.argv[1])
  assert jax.device_count() == 4 and stage.mesh.shape["data"] == 4
  init = jax.jit(lambda k: stage.model.init(k, stage.sample_input, train=False))
  host = jax.device_get(dict(init(jax.random.key(0))))
  target = partitioning.with_state_shardings(jax.eval_shape(lambda: host), stage.mesh)
  sharded = jax.device_put(host, partitioning.shardings_of(target))

  shards = []  # the shard counts DKM was traced with (one per layer when split)
  split = dkm._dkm_sharded
  dkm._dkm_sharded = lambda *a: (shards.append(a[6]), split(*a))[1]
  _, frozen = hard_codes.frozen_model(stage.model, sharded, stage.mesh)
  dkm._dkm_sharded = split
  one = partitioning.make_mesh(1)
  _, reference = hard_codes.frozen_model(stage.model, host, one)

  out = {"shards": shards, "layers": {}}
  for layer in ("conv2", "conv3"):
    a = jax.device_get(frozen["params"][layer]["codebook"])
    b = jax.device_get(reference["params"][layer]["codebook"])
    ca = jax.device_get(frozen["quant"][layer]["codes"])
    cb = jax.device_get(reference["quant"][layer]["codes"])
    out["layers"][layer] = {
      "codebook_rel": float(np.max(np.abs(a - b)) / np.max(np.abs(b))),
      "codes_differ": int(np.sum(ca != cb)),
      "rows": int(ca.size),
      "z_spec": str(sharded["params"][layer]["z"].sharding.spec),
    }

  make_iter = lambda: input_pipeline.build_input(config.data, split="eval")
  out["sharded"] = trainer.evaluate(stage.model, sharded, make_iter, stage.mesh)
  step = jax.jit(make_eval_step(stage.model))  # before: codes inside every batch, one device
  totals = {}
  for batch in make_iter():
    for k, v in jax.device_get(step(host, partitioning.global_batch(batch, one))).items():
      totals[k] = totals.get(k, 0.0) + float(v)
  out["per_batch"] = {
    "top1": 100 * totals["top1"] / totals["count"], "loss": totals["loss"] / totals["count"]
  }
  print("RESULT " + json.dumps(out))
  """
)


def test_sharded_hard_codes_match_one_device_per_batch_evaluation(tmp_path):
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  out = run(
    [sys.executable, str(script), str(tmp_path / "w")], child_env(4, tmp_path), tmp_path / "log"
  )
  result = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
  assert result["shards"] == [4, 4], result["shards"]  # conv2 and conv3: DKM rows split 4 ways
  # Measured (quick digits model, random init): centroids 2.1e-7 apart at most, every code and the
  # loss equal; the bounds leave room for a row within rounding of two centroids on other CPUs.
  for layer, r in result["layers"].items():
    assert r["z_spec"] == str(P("data", None)), (layer, r)
    assert r["codebook_rel"] <= 1e-5, (layer, r)
    assert r["codes_differ"] <= r["rows"] // 1000, (layer, r)
  sharded, per_batch = result["sharded"], result["per_batch"]
  assert abs(sharded["top1"] - per_batch["top1"]) <= 100 / 450 + 1e-9, result
  assert abs(sharded["loss"] - per_batch["loss"]) <= 1e-4 * abs(per_batch["loss"]), result
