"""The `lr2vq` CLI: report totals, estimate-dim tables, one-line errors with exit status 2."""

import subprocess
import sys

import pytest

from lr2vq_jax import cli


@pytest.mark.parametrize(
  "model, preset, totals",
  [
    ("resnet18", "resnet18_large_blocks", "uncompressed 44.59 MiB, compressed 1.029 MiB, ratio 43.3×"),
    ("resnet18", "resnet18_small_blocks", "uncompressed 44.59 MiB, compressed 1.541 MiB, ratio 28.9×"),
    ("resnet50", "resnet50_large_blocks", "uncompressed 97.49 MiB, compressed 3.185 MiB, ratio 30.6×"),
    ("resnet50", "resnet50_small_blocks", "uncompressed 97.49 MiB, compressed 5.092 MiB, ratio 19.1×"),
  ],
)  # fmt: skip
def test_report_totals(capsys, model, preset, totals):
  assert cli.main(["report", "--model", model, "--preset", preset]) == 0
  out = capsys.readouterr().out
  assert out.splitlines()[-1] == totals
  assert "layer1_0/conv2" in out and "fp32" in out


def test_report_factored_is_smaller(capsys):
  assert (
    cli.main(["report", "--preset", "resnet18_large_blocks", "--store", "factored", "--d", "4"])
    == 0
  )
  last = capsys.readouterr().out.splitlines()[-1]
  assert last.startswith("uncompressed 44.59 MiB") and "compressed 1.029" not in last


def test_estimate_dim_one_layer(capsys):
  argv = ["estimate-dim", "--layer", "layer1_0/conv1", "--candidates", "1,9,18", "--iters", "3"]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "layer1_0/conv1" in out and "n=2048 k=256 m=18" in out and "best d = " in out


@pytest.mark.parametrize(
  "argv, message",
  [
    (["report", "--preset", "nope"], "unknown preset 'nope'"),
    (["estimate-dim", "--layer", "zzz"], "no compressed layer matches 'zzz'"),
    (["estimate-dim", "--candidates", "1,x"], "bad --candidates"),
  ],
)
def test_errors_are_one_line_plus_hint(capsys, argv, message):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 2 and message in err[0] and err[1].startswith("hint: ")
  assert "Traceback" not in "\n".join(err)


def test_verbose_shows_traceback(capsys):
  assert cli.main(["report", "--preset", "nope", "--verbose"]) == 2
  assert "Traceback" in capsys.readouterr().err


def test_argparse_errors_exit_2():
  with pytest.raises(SystemExit) as info:
    cli.main(["report", "--model", "vgg"])
  assert info.value.code == 2


def test_python_dash_m():
  result = subprocess.run(
    [sys.executable, "-m", "lr2vq_jax", "report", "--preset", "resnet18_large_blocks"],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[-1].endswith("ratio 43.3×")
