"""The work dir keeps each stage's resolved config; a rerun with another one stops, by name."""

import json

import pytest

from lr2vq_jax.train import run_config
from lr2vq_jax.train.config import config_rules, load_config
from tests.support import cli_chain, train_cli
from tests.support.devices import copy_workdir


def test_differences_ignore_cadence_and_other_stages():
  old = run_config.resolved(load_config(train_cli.QUICK), "quantize")
  new = json.loads(json.dumps(old))
  new["quantize"]["log_every"] = 1
  new["pq"]["lr"] = 0.5
  new["quant"]["chunk_size"] = 8
  assert run_config.differences(old, new, "quantize") == []
  new["quant"]["commitment"] = 1.0
  new["lowrank"]["lr"] = 0.5
  assert run_config.differences(old, new, "float") == []
  new["d"], new["lowrank"]["init_from"] = 2, "elsewhere"
  new["resolved_rules"] = ["Rule('^conv[23]$', k=16, m=9, d=2)"]
  assert run_config.differences(old, new, "quantize") == [
    "lowrank.lr: 0.001 → 0.5",
    "quant.commitment: 0.0 → 1.0",
    "resolved_rules: [\"Rule('^conv[23]$', k=16, m=9, d=4)\"] → [\"Rule('^conv[23]$', k=16, m=9, d=2)\"]",
  ]


def test_k_m_and_rules_are_config_fields():
  config = load_config(train_cli.QUICK)
  config.k, config.m = 32, 4
  (rule,) = config_rules(config)
  assert (rule.k, rule.m, rule.d) == (32, 4, 4)
  config.rules = r"^conv1$:skip; conv[23]:k=8,m=9,d=2"
  config.k = config.m = 0
  config.d = 0
  assert [repr(r) for r in config_rules(config)] == [
    "Rule('^conv1$', skip)",
    "Rule('conv[23]', k=8, m=9, d=2)",
  ]


@pytest.mark.slow
def test_rerun_with_another_config_stops_with_the_fields(quick_run, tmp_path):
  """On a copy of the session's quick run (its stages trained with the quick config as is). The
  two reruns are `lr2vq train` commands one after the other in one process (tests/support/cli_chain:
  one start-up and jax import, not two)."""
  workdir = copy_workdir(quick_run, tmp_path / "wd")
  saved = json.loads((workdir / "lowrank" / "config.json").read_text())
  assert saved["k"] == 0 and saved["resolved_rules"] == ["Rule('^conv[23]$', k=16, m=9, d=4)"]
  train = ["train", f"--config={train_cli.QUICK}", f"--workdir={workdir}"]
  steps = [
    ("changed", [*train, "--config.stages=float,lowrank", "--config.quant.commitment=1.0"]),
    # Only the changed stage: the float stage (unchanged) would just be evaluated again.
    ("allowed", [*train, "--config.stages=lowrank", "--config.k=8",
                 "--config.quant.commitment=1.0", "--allow_config_change"]),
  ]  # fmt: skip
  proc = train_cli.run(cli_chain.command(steps, keep_going=True), timeout=480)  # 240 s each
  ran = cli_chain.split(proc.stderr)
  rc, stderr = ran.get("changed", (None, proc.stderr))
  assert rc == 2, stderr[-2000:]
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert "Traceback" not in stderr
  assert "stage 'lowrank'" in lines[-2] and "quant.commitment: 0.0 → 1.0" in lines[-2]
  assert "--allow_config_change" in lines[-1] and "new --workdir" in lines[-1]
  rc, stderr = ran.get("allowed", (None, proc.stderr))
  assert rc == 0, stderr[-2000:]
  saved = json.loads((workdir / "lowrank" / "config.json").read_text())
  assert saved["quant"]["commitment"] == 1.0
  assert saved["k"] == 8 and saved["resolved_rules"] == ["Rule('^conv[23]$', k=8, m=9, d=4)"]
