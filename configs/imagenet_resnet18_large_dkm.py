"""vanilla DKM: resnet18 on ImageNet, large blocks (43.3×, 1.029 MiB in the PQF/BGD accounting).

Run:       lr2vq train --config configs/imagenet_resnet18_large_dkm.py --workdir gs://BUCKET/imagenet_resnet18_large_dkm \
             --config.float.init_from=/path/resnet18_torchvision.safetensors \
             --config.data.data_dir=/path/tensorflow_datasets
           (see launch/ for TPU pods and GPU clusters)
Smoke:     --config configs/imagenet_resnet18_large_dkm.py:runlocal  (CPU, tiny images, 2 steps per stage)
Hardware:  a TPU v3-32 pod slice or 8×A100/H100 (global batch 1024, bf16).
Expected:  top-1 not published; uncompressed torchvision resnet18: 69.76.
"""

from lr2vq_jax.train.recipes import imagenet


def get_config(arg=None):
  return imagenet("resnet18", "large", "dkm", arg)
