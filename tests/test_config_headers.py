"""Every config header tells the truth about its size: the ratio and MiB it states are the size
report of the config's own model and rules (what `lr2vq report --config` prints), and the (m, k, d̃)
and code bits per weight it names are those of its rules."""

import ast
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from lr2vq_jax.core.accounting import size_report
from lr2vq_jax.train.config import config_model, config_rules, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))
SIZE = re.compile(r"\(([\d.]+)×, ([\d.]+) MiB")
PLAN = re.compile(
  r"\(m = (\d+), k = (\d+), d̃ = (\d+)\) close to it at ([\d.]+) code bits per weight"
)


def _header(path: Path) -> str:
  return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


_SHAPES: dict = {}


def _shapes(config):
  """Parameter shapes of the config's model at its input size (cached: the configs share four)."""
  key = (config.model, int(config.data.image_size), config.data.name)
  if key not in _SHAPES:
    model, shape = config_model(config)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    init = lambda k, x: model.init(k, x, train=False)  # noqa: E731
    _SHAPES[key] = jax.eval_shape(init, jax.random.key(0), x)
  return _SHAPES[key]


def test_headers_state_sizes():
  stated = [p.name for p in CONFIGS if SIZE.search(_header(p))]
  assert len(stated) >= 13, stated  # every ImageNet config and CIFAR-10 state their size


@pytest.mark.parametrize(
  "path", [p for p in CONFIGS if SIZE.search(_header(p))], ids=lambda p: p.name
)
def test_header_size_is_the_report(path):
  config = load_config(str(path))
  report = size_report(_shapes(config), config_rules(config), store=config.quant.store)
  ratio, mib = SIZE.search(_header(path)).groups()
  assert (f"{report.ratio:.1f}", f"{report.compressed_mib:.3f}") == (ratio, mib)


def test_default_header_names_its_rules():
  path = ROOT / "configs" / "default.py"
  m, k, d, bits = PLAN.search(" ".join(_header(path).split())).groups()
  rules = [r for r in config_rules(load_config(str(path))) if not r.skip]
  assert {(r.m, r.k, r.d) for r in rules} == {(int(m), int(k), int(d))}
  assert f"{math.ceil(math.log2(int(k))) / int(m):.2f}" == bits
