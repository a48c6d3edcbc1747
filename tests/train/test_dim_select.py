"""Choosing d̃ on the task (train/dim_select.py) and `lr2vq estimate-dim --config`."""

import numpy as np
import pytest

from lr2vq_jax import cli
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.dim_select import DimSelection, select_dim
from tests.support.paths import QUICK

CONFIG = QUICK


@pytest.fixture(scope="module")
def float_dir(quick_run):
  """The session's quick run's float stage (the same quick config; read only)."""
  return str(quick_run / "float")


@pytest.mark.slow
def test_select_dim_scores_every_candidate_and_picks_the_lowest_loss(float_dir, tmp_path):
  # d̃ = 4 (the quick config's own) is scored and pre-trained as the quick run trained it (its six
  # low-rank steps): k-means, freezing, evaluation and low-rank training reuse that run's programs.
  config = load_config(CONFIG)
  d, steps = config.d, config.lowrank.num_steps
  sel = select_dim(config, float_dir, str(tmp_path), (1, d, 9))
  assert sel.candidates == (1, d, 9)
  assert all(np.isfinite(sel.val_loss)) and all(0 <= t <= 100 for t in sel.val_top1)
  assert sel.best == sel.candidates[int(np.argmin(sel.val_loss))]
  assert "no pre-training" in sel.basis and "BatchNorm" not in sel.basis
  assert f"best d = {sel.best}" in sel.table()
  # Optional BN re-estimation is applied (the same clustering scores differently with it).
  bn = select_dim(config, float_dir, str(tmp_path / "bn"), (d,), bn_batches=2)
  assert bn.val_loss[0] != pytest.approx(sel.val_loss[1], rel=1e-6)
  assert "BatchNorm re-estimated on 2 unlabeled batches" in bn.basis
  # With pre-training the low-rank stage runs per candidate, in its own folder.
  sel2 = select_dim(config, float_dir, str(tmp_path / "pre"), (d,), pretrain_steps=steps)
  assert (tmp_path / "pre" / f"d{d}" / "lowrank" / "checkpoints").exists()
  assert f"after {steps} steps of low-rank pre-training" in sel2.basis
  assert sel2.val_loss[0] != pytest.approx(sel.val_loss[1], rel=1e-6)


def test_dim_selection_best_follows_the_loss():
  sel = DimSelection((2, 4, 6), (0.9, 0.4, 0.5), (80.0, 90.0, 95.0), 0)
  assert sel.best == 4  # the loss decides, not top-1


def test_cli_estimate_dim_on_the_task(float_dir, tmp_path, capsys):
  argv = ["estimate-dim", "--config", CONFIG, "--float-dir", float_dir]
  assert cli.main([*argv, "--workdir", str(tmp_path), "--candidates", "2,9"]) == 0
  out = capsys.readouterr().out
  assert "based on the validation loss of the k-means-clustered rank-d̃ model" in out
  assert cli.main([*argv, "--candidates", "12"]) == 2  # d̃ > m: one clear error
  assert "outside 1..9" in capsys.readouterr().err
  assert cli.main(["estimate-dim", "--config", CONFIG]) == 2
  assert "--float-dir" in capsys.readouterr().err
