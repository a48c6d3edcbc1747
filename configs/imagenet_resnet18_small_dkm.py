"""vanilla DKM: resnet18 on ImageNet, small blocks (28.9×, 1.541 MiB in the PQF/BGD accounting).

Run:       lr2vq train --config configs/imagenet_resnet18_small_dkm.py --workdir gs://BUCKET/runs/imagenet_resnet18_small_dkm \
             --config.float.init_from=/path/resnet18_torchvision.safetensors \
             --config.data.data_dir=/path/tensorflow_datasets
           (TPU pod: BUCKET=gs://BUCKET CONFIG=configs/imagenet_resnet18_small_dkm.py launch/tpu_pod.sh run;
           README "Train on a Cloud TPU pod"; launch/ for GPU clusters)
Bucket:    gcloud storage buckets create gs://BUCKET --location=REGION --uniform-bucket-level-access
           gcloud storage buckets add-iam-policy-binding gs://BUCKET \
             --member=serviceAccount:TPU_SERVICE_ACCOUNT --role=roles/storage.objectAdmin
           (the same with --role=roles/storage.legacyBucketReader; launch/tpu_pod.sh bucket
           and grant print and run these)
Smoke:     --config configs/imagenet_resnet18_small_dkm.py:runlocal  (CPU, tiny images, 2 steps per fine-tuning stage)
Hardware:  a TPU v3-32 pod slice or 8×A100/H100 (global batch 1024, bf16).
Expected:  top-1 not published; uncompressed torchvision resnet18: 69.76.
"""

from lr2vq_jax.train.recipes import imagenet


def get_config(arg=None):
  return imagenet("resnet18", "small", "dkm", arg)
