"""`lr2vq plan`: allocation table, rules file a config takes (@FILE), PNG, one-line errors."""

import jax
import jax.numpy as jnp
import pytest

import lr2vq_jax as lq
from lr2vq_jax import cli
from lr2vq_jax.models import create_model
from lr2vq_jax.planning import command, rules_file
from lr2vq_jax.train.config import config_rules, load_config
from lr2vq_jax.train.validate import validate_config
from tests.support.paths import config as config_path

FAST = ["--ms", "1,2,4,9", "--ks", "2,4,8,16,32"]


def test_plan_digits_writes_rules_and_png(tmp_path, capsys):
  rules, png = tmp_path / "plan.rules", tmp_path / "plan.png"
  argv = ["plan", "--config", config_path("default.py"), "--target-bytes", "13800", *FAST]
  assert cli.main([*argv, "--out", str(rules), "--png", str(png)]) == 0
  out, err = capsys.readouterr()
  assert "no data" in err and "weight error only" in err  # says plainly: no trained weights
  total = next(ln for ln in out.splitlines() if ln.startswith("total "))
  assert "of target 13,800.0" in total
  for layer in ("conv1", "conv2", "conv3", "fc"):
    assert any(ln.startswith(layer + " ") for ln in out.splitlines())
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # the rules file round-trips into the training config, which validates and sizes it
  config = load_config(config_path("default.py"))
  config.rules = f"@{rules}"
  validate_config(config)
  text = rules_file.read_rules_text(str(rules))
  assert config_rules(config) == lq.core.rules.parse_rules(text)
  model = create_model("digits_cnn", num_classes=10)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
  planned = float(total.split()[1].replace(",", ""))
  assert lq.size_report(shapes, config_rules(config)).compressed_bytes == planned <= 13800


def test_imagenet_config_takes_a_plan(tmp_path, capsys):
  """The runlocal model (1/8 width, one block per stage), from shapes, by ratio."""
  spec = config_path("imagenet_resnet18_large_lr2vq.py:runlocal")
  rules = tmp_path / "r18.rules"
  argv = ["plan", "--config", spec, "--ratio", "20", "--keep-float", "^conv1$", *FAST]
  assert cli.main([*argv, "--out", str(rules)]) == 0
  out = capsys.readouterr().out
  assert "layer4_0/conv2" in out and "reference rules (uniform)" in out
  config = load_config(spec)
  config.rules = f"@{rules}"
  got = config_rules(config)
  assert got[0] == lq.Rule("^conv1$", skip=True)
  assert all(r.skip or r.d <= min(r.m, config.d) for r in got)  # the config's d̃ cap kept


@pytest.mark.parametrize(
  "extra, message",
  [
    (["--target-bytes", "1.0XB"], "target bytes '1.0XB'"),
    (["--target-bytes", "1MiB", "--ratio", "4"], "exactly one of --target-bytes and --ratio"),
    ([], "exactly one of --target-bytes and --ratio"),
    (["--ratio", "0.5"], "--ratio 0.5: must be > 1"),
    (["--target-bytes", "100"], "below the smallest possible size"),
    (["--target-bytes", "1MiB", "--ks", "2,x"], "--ks '2,x'"),
    (["--target-bytes", "1MiB", "--float-dir", "/nonexistent/float"], "no checkpoint"),
  ],
)
def test_errors_are_one_line_plus_hint(capsys, extra, message):
  assert cli.main(["plan", "--config", config_path("default.py"), *FAST, *extra]) == 2
  err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("WARNING")]
  assert len(err) == 2 and message in err[0] and err[1].startswith("hint: "), err


def test_bad_rules_file_is_a_config_error(tmp_path):
  config = load_config(config_path("default.py"))
  config.rules = f"@{tmp_path / 'missing.rules'}"
  with pytest.raises(ValueError, match="rules file .* not found"):
    validate_config(config)


@pytest.mark.parametrize(
  "text, value",
  [
    ("1.0MiB", 2**20),
    ("3185KiB", 3185 * 1024),
    ("1.5MB", 1.5e6),
    ("14000", 14000),
    ("2 GiB", 2**31),
  ],
)
def test_parse_bytes(text, value):
  assert command.parse_bytes(text) == value
