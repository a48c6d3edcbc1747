"""A tiny ImageNet in the official layout, written at test time (nothing downloaded).

`ILSVRC2012_img_train.tar` holds one uncompressed tar per synset (`n01440764.tar` with
`n01440764_<i>.JPEG` inside), including the CMYK JPEG and the PNG-in-disguise that tfds converts,
under their real names (tfds's imagenet2012 CMYK_IMAGES / PNG_IMAGES). `ILSVRC2012_img_val.tar`
holds `ILSVRC2012_val_00000001.JPEG` ... flat. Image sizes and aspect ratios are ImageNet's common
ones (500×375, 375×500, 500×333, 500×500, ...), content smooth colour fields with noise so that
JPEG sizes are realistic (~30–110 KB).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CMYK = ("n01739381", "n01739381_1309.JPEG")  # in tfds's CMYK_IMAGES
PNG = ("n02105855", "n02105855_2933.JPEG")  # tfds's PNG_IMAGES (a PNG named .JPEG)
SYNSETS = ("n01440764", "n01443537", CMYK[0], PNG[0])
SIZES = ((500, 375), (375, 500), (500, 333), (500, 500), (333, 500), (640, 480), (500, 281))


def _pixels(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  base = rng.uniform(0, 255, 3)
  slope = rng.uniform(-0.4, 0.4, (2, 3))
  img = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
  img += 40 * np.sin(xx / rng.uniform(5, 30))[..., None] + rng.normal(0, 12, (h, w, 3))
  return np.clip(img, 0, 255).astype(np.uint8)


def encode_image(rng: np.random.Generator, size: tuple[int, int], fmt: str = "JPEG") -> bytes:
  image = Image.fromarray(_pixels(rng, *size))
  if fmt == "CMYK":
    image, fmt = image.convert("CMYK"), "JPEG"
  buf = io.BytesIO()
  image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
  return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_tiny_imagenet(manual_dir: Path, per_synset: int = 3, num_val: int = 4, seed: int = 0):
  """Writes the two tars into `manual_dir`; returns {"train": n, "validation": n}."""
  rng = np.random.default_rng(seed)
  manual_dir.mkdir(parents=True, exist_ok=True)
  count = 0
  with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as out:
    for synset in SYNSETS:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(per_synset):
          _add(tar, f"{synset}_{i + 1}.JPEG", encode_image(rng, SIZES[count % len(SIZES)]))
          count += 1
        if synset == CMYK[0]:
          _add(tar, CMYK[1], encode_image(rng, (500, 375), "CMYK"))
          count += 1
        if synset == PNG[0]:
          _add(tar, PNG[1], encode_image(rng, (500, 333), "PNG"))
          count += 1
      _add(out, f"{synset}.tar", inner.getvalue())
  with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w", format=tarfile.GNU_FORMAT) as out:
    for i in range(num_val):
      _add(out, f"ILSVRC2012_val_{i + 1:08d}.JPEG", encode_image(rng, SIZES[i % len(SIZES)]))
  return {"train": count, "validation": num_val}
