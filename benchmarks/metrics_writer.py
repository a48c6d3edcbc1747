"""CPU seconds a fresh process pays for the training run's metrics: logger, hooks, one write.

Each measurement is a new Python process that imports JAX (not counted), then `MetricsLogger`,
`periodic_hooks`, one row of scalars, one progress hook call and the close (`time.process_time`,
imports included: what every training run and test subprocess pays). Run it on two checkouts
(`--root`) to compare writers; best of `--repeats`.

  python benchmarks/metrics_writer.py [--root .] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
import jax
t = time.process_time()
from lr2vq_jax.train import metrics
log = metrics.MetricsLogger(sys.argv[1], is_primary=True, stage="s")
hooks = metrics.periodic_hooks(sys.argv[1], num_train_steps=10, writer=log.writer, is_primary=True)
log.write_scalars(1, {"loss": 0.5})
hooks[0](1)
log.close()
print(time.process_time() - t, "tensorflow" in sys.modules, "clu" in sys.modules)
"""


def cpu_seconds(root: Path) -> tuple[float, bool, bool]:
  """(CPU s, TensorFlow imported, clu imported) of one fresh process writing metrics."""
  env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="3")
  with tempfile.TemporaryDirectory() as workdir:
    out = subprocess.run(
      [sys.executable, "-c", CHILD, workdir], env=env, cwd=root, capture_output=True, text=True,
      check=True,
    )  # fmt: skip
  secs, tf, clu = out.stdout.split()
  return float(secs), tf == "True", clu == "True"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  runs = [cpu_seconds(args.root.resolve()) for _ in range(args.repeats)]
  best = min(r[0] for r in runs)
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; root {args.root}")
  print("| CPU s per process (best) | all runs | imports TensorFlow | imports clu |")
  print("|---|---|---|---|")
  print(f"| {best:.2f} | {', '.join(f'{r[0]:.2f}' for r in runs)} | {runs[0][1]} | {runs[0][2]} |")
  print(f"RESULT metrics_cpu_s={best:.2f} tensorflow={runs[0][1]} clu={runs[0][2]}")


if __name__ == "__main__":
  main()
