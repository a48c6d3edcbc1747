"""Export → load → decode gives the quantize stage's evaluation; bytes equal the accounting."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.models.resnet import BasicBlock, ResNet
from tests.support.plain_net import RULES, PlainNet, X


def _rel_err(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


# Decoded artifact vs the quantize stage's hard-code evaluation: the same codes and fp16 tables,
# so only the rebuilt kernels (C[a]·P, BatchNorm folded and unfolded) can differ, by an ulp or two.
# Measured (default ISA and --xla_cpu_max_isa=AVX2): ResNet-18 bitwise equal, PlainNet ≤ 7.8e-8;
# the test's first two stages of ResNet-18: bitwise equal (AVX2-only EPYC).
ROUNDTRIP_TOL = 1e-6


def _quantized(model, rules, x, plan=None, config=None):
  float_vars = model.init(jax.random.key(0), x, train=False)
  lowrank = convert.float_to_lowrank(float_vars, rules, plan=plan, config=config)
  return float_vars, convert.lowrank_to_quantize(
    lowrank, rules, key=jax.random.key(1), kmeans_iters=3, config=config
  )


@pytest.mark.parametrize("store", ["codebook", "factored"])
def test_plain_model_roundtrip(tmp_path, store):
  config = lq.nn.QuantConfig(store=store)
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  _, variables = _quantized(PlainNet(), RULES, X, plan, config)
  # Give BatchNorm non-trivial statistics so folding is exercised.
  variables["batch_stats"] = jax.tree.map(lambda v: v + 0.3, variables["batch_stats"])
  evaluated = lq.nn.quantize_model(PlainNet(), RULES, "quantize", config).apply(variables, X)
  manifest = lq.export(variables, RULES, tmp_path, config=config)
  decoded = lq.load(tmp_path).decode()
  assert "z" not in json.dumps(list(decoded["params"]["body"]))
  logits = PlainNet().apply(decoded, X)
  assert _rel_err(logits, evaluated) <= ROUNDTRIP_TOL
  assert manifest["layers"]["proj"]["view_shape"] == [16, 16]


def _numpy_variables(quantized, x):
  """`quantized`'s variables without building them: the integers (shapes, recorded settings,
  lists) from its `init` compiled with only those outputs kept (no SVD, codebook or τ is
  computed), every float from NumPy's RNG at a scale that keeps 18 layers finite, BatchNorm and
  the warm-start offsets as `init` makes them. Compiling the whole `init` costs ~10 s on CPU."""

  def init(key):
    return quantized.init(key, x, train=False)

  def is_int(v):
    return jnp.issubdtype(v.dtype, jnp.integer)

  shapes = jax.eval_shape(init, jax.random.key(0))
  ints = jax.jit(lambda key: jax.tree.map(lambda v: v if is_int(v) else None, init(key)))(
    jax.random.key(0)
  )
  ints = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(ints)}
  rng = np.random.default_rng(0)

  def fill(path, s):
    name = path[-1].key
    if is_int(s):
      return ints[jax.tree_util.keystr(path)]
    if name in ("scale", "var"):
      return jnp.ones(s.shape)
    if name in ("bias", "mean", "offset"):
      return jnp.zeros(s.shape)
    if name == "tau":
      return jnp.full(s.shape, 1e-4)
    scale = 1 / np.sqrt(np.prod(s.shape[:-1])) if name == "kernel" else 0.05
    return jnp.asarray(rng.normal(size=s.shape) * scale, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.slow
def test_resnet18_roundtrip_and_bytes_equal_accounting(tmp_path):
  """Every ResNet-18 layer kind (the float stem; identity and downsampling BasicBlocks: 3×3,
  strided 3×3, 1×1 shortcut, BatchNorm; fc) at the paper's large-block preset, on ResNet-18's
  first two stages, one block each: five quantized kernel shapes instead of ResNet-18's eleven
  (a compiled code assignment each), every layer at its preset k (none clamped to n / 4). The
  quantize-stage variables have the quantized model's shapes and recorded settings and random
  values (no SVD, no k-means): roundtrip and byte counts do not depend on how the numbers were
  trained. ImageNet's 1000 classes: fc keeps its k = 2048 (128 × 1000 / 4 = 32,000 rows), the
  layer whose n × k assignment dominates the run time, and the payload stays large next to the
  container's per-array overhead (4.3% here)."""
  rules = tuple(
    dataclasses.replace(r, d=max(1, r.m // 2)) if not r.skip else r
    for r in lq.presets.resnet18_large_blocks
  )
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  model = ResNet(stage_sizes=(1, 1), block_cls=BasicBlock, num_classes=1000)
  quantized = lq.nn.quantize_model(model, rules, "quantize")
  variables = _numpy_variables(quantized, x)
  float_vars = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  # Eager on purpose: the per-layer code assignments it compiles are the ones `export` reuses
  # (jitted, this test costs more CPU time, measured: one whole-model compile on top of them).
  evaluated = quantized.apply(variables, x, train=False)
  manifest = lq.export(variables, rules, tmp_path)
  artifact = lq.load(tmp_path)
  logits = model.apply(artifact.decode(), x, train=False)
  assert _rel_err(logits, evaluated) <= ROUNDTRIP_TOL
  layers = manifest["layers"]
  assert {"layer1_0/conv2", "layer2_0/conv1", "layer2_0/downsample_conv", "fc"} <= set(layers)
  preset_k = {r.pattern: r.k for r in rules}
  assert all(e["k"] == preset_k[e["rule"]] for e in layers.values())  # no k capped at n

  report = lq.size_report(float_vars["params"], rules)
  payload = manifest["payload_bytes"]
  assert payload["codes"] == report.code_bytes
  assert payload["codebooks"] == report.codebook_bytes
  assert payload["other"] == report.other_bytes
  assert payload["total"] == report.compressed_bytes
  # The container (npz headers, manifest) is reported apart from the payload.
  overhead = manifest["arrays_bytes"] - payload["total"]
  assert 0 < overhead < 0.05 * payload["total"]
  assert os.path.getsize(tmp_path / "manifest.json") > 0
  # No float kernel of a compressed layer is shipped.
  assert not any(k.endswith("/kernel") and k != "conv1/kernel" for k in artifact.arrays)


def test_export_rejects_lowrank_variables(tmp_path):
  float_vars = PlainNet().init(jax.random.key(0), X)
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  lowrank = convert.float_to_lowrank(float_vars, RULES, plan=plan)
  with pytest.raises(ValueError, match="quantize- or frozen-mode"):
    lq.export(lowrank, RULES, tmp_path)


def test_load_rejects_corruption(tmp_path):
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  _, variables = _quantized(PlainNet(), RULES, X, plan)
  lq.export(variables, RULES, tmp_path)
  path = tmp_path / "arrays.npz"
  blob = bytearray(path.read_bytes())
  blob[len(blob) // 2] ^= 0xFF
  path.write_bytes(bytes(blob))
  with pytest.raises(lq.ArtifactError, match="sha256"):
    lq.load(tmp_path)
  path.write_bytes(bytes(blob[: len(blob) // 2]))
  with pytest.raises(lq.ArtifactError):
    lq.load(tmp_path)
