"""launch/*.sh: valid bash, and their dry runs print the expected commands."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess

import pytest

from tests.support.paths import ROOT

SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))


def _dry(script: str, *args: str, **env: str) -> str:
  full_env = {**os.environ, **env}
  proc = subprocess.run(
    ["bash", str(ROOT / "launch" / script), "--dry-run", *args],
    capture_output=True,
    text=True,
    env=full_env,
    cwd=ROOT,
    check=False,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  subprocess.run(["bash", "-n", str(script)], check=True)


def test_single_host():
  out = _dry("single_host.sh", "--cpu-devices", "8", "--", "--config.stages=float")
  assert "XLA_FLAGS=--xla_force_host_platform_device_count=8" in out
  assert "-m lr2vq_jax.main --config configs/default.py --workdir runs/single_host" in out
  assert out.rstrip().endswith("--config.stages=float")


def test_gpu_multinode_env_and_local():
  out = _dry(
    "gpu_multinode.sh",
    "--workdir",
    "/shared/w",
    COORDINATOR="n0:1234",
    NUM_PROCESSES="2",
    PROCESS_ID="1",
  )
  assert "LR2VQ_COORDINATOR=n0:1234 LR2VQ_NUM_PROCESSES=2 LR2VQ_PROCESS_ID=1" in out
  out = _dry("gpu_multinode.sh", "--local", "2", "--cpu-devices", "2")
  lines = [ln for ln in out.splitlines() if ln.startswith("+")]
  assert len(lines) == 2 and "LR2VQ_PROCESS_ID=0" in lines[0] and "LR2VQ_PROCESS_ID=1" in lines[1]
  out = _dry("gpu_multinode.sh", "--install", COORDINATOR="a:1", NUM_PROCESSES="1", PROCESS_ID="0")
  assert "jax\\[cuda12\\]==0.10.2" in out


def test_gpu_slurm():
  out = _dry("gpu_slurm.sh", "--", "--config.stages=quantize", WORKDIR="/shared/w")
  assert out.startswith("+ srun ")
  assert "env LR2VQ_DISTRIBUTED=1" in out and "--workdir /shared/w --config.stages=quantize" in out


def _lines(out: str) -> list[list[str]]:
  """The printed commands, each split back into its words (the script prints them %q-quoted)."""
  return [shlex.split(ln[2:]) for ln in out.splitlines() if ln.startswith("+ ")]


def _remote(words: list[str]) -> list[str]:
  """The command a `gcloud ... ssh --command CMD` line runs on the workers, as words."""
  return shlex.split(words[words.index("--command") + 1])


def test_tpu_pod():
  assert "tpu-vm create lr2vq-pod" in _dry("tpu_pod.sh", "create")
  out = _dry("tpu_pod.sh", "setup")
  assert "--worker=all" in out and "jax\\[tpu\\]==0.10.2" in out
  out = _dry("tpu_pod.sh", "run", BUCKET="gs://b")
  assert "tpu-vm ssh lr2vq-pod" in out and "--worker=all" in out and "LR2VQ_DISTRIBUTED=1" in out
  assert "tpu-vm delete lr2vq-pod" in _dry("tpu_pod.sh", "delete")


def test_tpu_pod_bucket_and_access_commands():
  env = dict(BUCKET="gs://my-bucket", PROJECT="proj", ZONE="europe-west4-a")
  [create] = _lines(_dry("tpu_pod.sh", "bucket", **env))
  assert create == ["gcloud", "storage", "buckets", "create", "gs://my-bucket", "--project=proj",
                    "--location=europe-west4", "--uniform-bucket-level-access"]  # fmt: skip
  describe, *grants = _lines(_dry("tpu_pod.sh", "grant", **env))
  assert describe[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "describe"]
  assert "--format=value(serviceAccount.email)" in describe
  roles = [g[-1] for g in grants]
  assert roles == ["--role=roles/storage.objectAdmin", "--role=roles/storage.legacyBucketReader"]
  for g in grants:
    assert g[:5] == ["gcloud", "storage", "buckets", "add-iam-policy-binding", "gs://my-bucket"]
    assert "--member=serviceAccount:$SERVICE_ACCOUNT" in g
  grants = _lines(_dry("tpu_pod.sh", "grant", SERVICE_ACCOUNT="sa@p.iam", **env))
  assert len(grants) == 2 and all("--member=serviceAccount:sa@p.iam" in g for g in grants)


def test_tpu_pod_everything_lives_in_the_bucket():
  env = dict(BUCKET="gs://b/", CONFIG="configs/imagenet_resnet50_large_pq.py")
  [prep] = _lines(_dry("tpu_pod.sh", "prepare", **env))
  assert "--worker=0" in prep
  remote = _remote(prep)
  assert remote[remote.index("prepare") :] == [
    "prepare", "imagenet2012", "--manual_dir", "gs://b/imagenet",
    "--data_dir", "gs://b/tensorflow_datasets"]  # fmt: skip
  [train] = _lines(_dry("tpu_pod.sh", "run", "--", "--config.float.init_from=gs://b/w.npz", **env))
  remote = _remote(train)
  assert "TFDS_DATA_DIR=gs://b/tensorflow_datasets" in remote
  assert remote[-5:] == ["--config", "configs/imagenet_resnet50_large_pq.py", "--workdir",
                         "gs://b/runs/imagenet_resnet50_large_pq",
                         "--config.float.init_from=gs://b/w.npz"]  # fmt: skip
  [export] = _lines(_dry("tpu_pod.sh", "export", **env))
  remote = " ".join(_remote(export))
  assert "export --config configs/imagenet_resnet50_large_pq.py" in remote
  assert "--out gs://b/artifacts/imagenet_resnet50_large_pq" in remote
  assert "eval --artifact gs://b/artifacts/imagenet_resnet50_large_pq" in remote


def test_tpu_pod_needs_a_bucket():
  proc = subprocess.run(
    ["bash", str(ROOT / "launch" / "tpu_pod.sh"), "--dry-run", "run"],
    capture_output=True, text=True, env={**os.environ, "BUCKET": "/mnt/disk"}, timeout=60,
  )  # fmt: skip
  assert proc.returncode == 2 and "BUCKET must be gs://NAME" in proc.stderr
  env = {k: v for k, v in os.environ.items() if k != "BUCKET"}
  proc = subprocess.run(["bash", str(ROOT / "launch" / "tpu_pod.sh"), "--dry-run", "prepare"],
                        capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
  assert proc.returncode == 2 and "set BUCKET=gs://NAME" in proc.stderr


def _header_block(path, label: str) -> list[str]:
  """The commands of a config docstring's `label:` block (continuations joined, notes dropped)."""
  doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
  lines, out, on = doc.splitlines(), [], False
  for line in lines:
    if re.match(r"^\w[\w ]*:\s", line):
      on = line.startswith(f"{label}:")
      line = line.split(":", 1)[1] if on else line
    text = line.strip()
    if text.startswith("("):  # a note closes the block
      on = False
    if not on:
      continue
    if out and out[-1].endswith("\\"):
      out[-1] = out[-1][:-1].rstrip() + " " + text
    else:
      out.append(text)
  return out


@pytest.mark.parametrize(
  "config", sorted((ROOT / "configs").glob("imagenet_*.py")), ids=lambda p: p.stem
)
def test_imagenet_headers_print_what_tpu_pod_runs(config):
  """The bucket commands in each ImageNet config header are the launcher's, word for word, and
  its TPU-pod line dry-runs with a gs:// work dir."""
  env = dict(BUCKET="gs://BUCKET", LOCATION="REGION", SERVICE_ACCOUNT="TPU_SERVICE_ACCOUNT")
  printed = _lines(_dry("tpu_pod.sh", "bucket", **env)) + _lines(_dry("tpu_pod.sh", "grant", **env))
  header = [shlex.split(c) for c in _header_block(config, "Bucket")]
  assert header == printed[:2], (header, printed)
  assert printed[2][-1] == "--role=roles/storage.legacyBucketReader"
  doc = config.read_text(encoding="utf-8")
  pod = re.search(r"\(TPU pod: (BUCKET=\S+ CONFIG=\S+ launch/tpu_pod\.sh run);", doc).group(1)
  assert f"CONFIG=configs/{config.name} " in pod
  proc = subprocess.run(["bash", "-c", pod], cwd=ROOT, capture_output=True, text=True, timeout=60,
                        env={**os.environ, "DRY_RUN": "1"})  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  remote = _remote(_lines(proc.stdout)[0])
  assert remote[-4:] == ["--config", f"configs/{config.name}", "--workdir",
                         f"gs://BUCKET/runs/{config.stem}"]  # fmt: skip
  assert f"--workdir gs://BUCKET/runs/{config.stem} " in doc  # the Run: line's work dir too
