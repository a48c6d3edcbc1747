"""PQF/BGD accounting reproduces the published sizes from architecture shapes alone."""

import math

import jax
import jax.numpy as jnp
import pytest

from lr2vq_jax import presets
from lr2vq_jax.core import codec
from lr2vq_jax.core.accounting import size_report
from lr2vq_jax.core.rules import Rule
from lr2vq_jax.models import ResNet18, ResNet50


@pytest.fixture(scope="module")
def shapes():
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  out = {}
  for name, model in [("resnet18", ResNet18()), ("resnet50", ResNet50())]:
    init = lambda key, x, model=model: model.init(key, x, train=False)  # noqa: E731
    out[name] = jax.eval_shape(init, jax.random.key(0), x)["params"]
  return out


@pytest.mark.parametrize(
  "preset, uncompressed, compressed, ratio",
  [
    ("resnet18_small_blocks", "44.59", "1.541", "28.9"),
    ("resnet18_large_blocks", "44.59", "1.029", "43.3"),
    ("resnet50_small_blocks", "97.49", "5.092", "19.1"),
    ("resnet50_large_blocks", "97.49", "3.185", "30.6"),
  ],
)
def test_published_sizes(shapes, preset, uncompressed, compressed, ratio):
  report = size_report(shapes[preset.split("_")[0]], presets.get_preset(preset))
  assert f"{report.uncompressed_mib:.2f}" == uncompressed
  assert f"{report.compressed_mib:.3f}" == compressed
  assert f"{report.ratio:.1f}" == ratio
  line = f"uncompressed {uncompressed} MiB, compressed {compressed} MiB, ratio {ratio}×"
  assert report.table().splitlines()[-1] == line


@pytest.mark.parametrize(
  "model, preset, codes, codebooks, other",
  [
    ("resnet18", "resnet18_large_blocks", "0.791", "0.162", "0.076"),
    ("resnet50", "resnet50_large_blocks", "2.656", "0.287", "0.242"),
  ],
)
def test_breakdown(shapes, model, preset, codes, codebooks, other):
  r = size_report(shapes[model], presets.get_preset(preset))
  assert [f"{v / 2**20:.3f}" for v in (r.code_bytes, r.codebook_bytes, r.other_bytes)] == [
    codes,
    codebooks,
    other,
  ]
  assert r.compressed_bytes == r.code_bytes + r.codebook_bytes + r.other_bytes
  assert r.num_params == (11_689_512 if model == "resnet18" else 25_557_032)
  assert r.uncompressed_bytes == 4 * r.num_params


def test_rows_and_clamp(shapes):
  r = size_report(shapes["resnet50"], presets.resnet50_large_blocks)
  rows = {row.path: row for row in r.layers}
  first = rows["layer1_0/conv1"]  # 1x1 64->64, m=8: n=512, k clamped to 128 (7 bits)
  assert (first.n, first.k, first.m, first.d, first.bits) == (512, 128, 8, 8, 7)
  assert first.code_bits == 512 * 7 and first.code_bytes == 448
  assert first.codebook_bytes == 2 * 128 * 8
  assert first.total_bytes == 448 + 2048
  fc = rows["fc"]
  assert (fc.n, fc.k, fc.bits) == (512_000, 1024, 10)
  assert [p for p, _ in r.float_layers] == ["conv1"]
  for row in r.layers:  # per-layer packed bytes are what codec.pack_codes writes
    assert row.code_bytes == codec.packed_size(row.n, row.k) == math.ceil(row.code_bits / 8)
  assert r.code_bytes == sum(row.code_bits for row in r.layers) / 8


def test_factored_store(shapes):
  rules = presets.with_d(presets.resnet18_large_blocks, 0.5)
  merged = size_report(shapes["resnet18"], rules)
  factored = size_report(shapes["resnet18"], rules, store="factored")
  assert merged.code_bytes == factored.code_bytes and merged.other_bytes == factored.other_bytes
  expected = sum(2 * (r.k * r.d + r.d * r.m) for r in factored.layers)
  assert factored.codebook_bytes == expected < merged.codebook_bytes
  assert factored.compressed_mib < merged.compressed_mib
  assert {r.d for r in factored.layers} == {2, 9}
  with pytest.raises(ValueError, match="store"):
    size_report(shapes["resnet18"], rules, store="fp8")


def test_hand_computed_toy_model():
  params = {
    "conv1": {"kernel": jnp.zeros((3, 3, 3, 8))},  # skipped: 216 params at fp32
    "bn": {"scale": jnp.zeros(8), "bias": jnp.zeros(8)},
    "fc": {"kernel": jnp.zeros((72, 10)), "bias": jnp.zeros(10)},  # n = 180, k clamp 32
  }
  rules = (Rule("^conv1$", skip=True), Rule("^fc$", k=256, m=4))
  r = size_report({"params": params, "batch_stats": {"bn": {"mean": jnp.zeros(8)}}}, rules)
  other = 216 + 16 + 10
  assert r.other_params == other
  assert r.code_bytes == 180 * 5 / 8  # exact bits / 8 in the totals
  assert r.layers[0].code_bytes == 113  # packed: ceil(900 / 8)
  assert r.codebook_bytes == 2 * 32 * 4
  assert r.compressed_bytes == 180 * 5 / 8 + 256 + 4 * other
  assert r.uncompressed_bytes == 4 * (other + 720)
  table = r.table()
  assert "fc" in table and "conv1" in table and "fp32" in table


def test_preset_registry():
  assert set(presets.PRESETS) >= {
    "resnet18_small_blocks",
    "resnet18_large_blocks",
    "resnet50_small_blocks",
    "resnet50_large_blocks",
  }
  with pytest.raises(KeyError, match="resnet18_small_blocks, resnet18_large_blocks"):
    presets.get_preset("resnet18")
  rules = presets.get_preset("resnet50_large_blocks")
  assert rules[0] == Rule("^conv1$", skip=True)
  assert all(r.d is None for r in rules)
  assert [r.d for r in presets.with_d(rules, 4)[1:]] == [4, 4, 4]
  assert [r.d for r in presets.with_d(rules, 0.5)[1:]] == [9, 4, 2]
