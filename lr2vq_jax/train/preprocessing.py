"""Per-example preprocessing and augmentation (TensorFlow ops inside tf.data).

Augmentation uses stateless ops seeded by (seed, global example position), so it is reproducible.
ImageNet resizing is bilinear with antialiasing, close to torchvision's PIL transforms that the
PyTorch baselines (and converted torchvision weights) were trained and evaluated with.
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

from lr2vq_jax.train.datasets import AUGMENT_SALT

try:  # keep TensorFlow off the accelerators: JAX owns them
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF already initialised its devices (someone imported it first)
  pass

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR10_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR10_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
  """(image - mean) / std per channel, in float32."""
  return (tf.cast(image, tf.float32) - tf.constant(mean)) / tf.constant(std)


def preprocess_array(
  cfg: ml_collections.ConfigDict, image: tf.Tensor, seed: tf.Tensor | None
) -> tf.Tensor:
  """Digits: ±1 px shifts, /16. CIFAR-10: 4-px pad + random crop + flip, normalised.

  `seed` None: evaluation, no augmentation."""
  shape = tf.shape(image)
  if cfg.name == "digits":
    if seed is not None:
      padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
      image = tf.image.stateless_random_crop(padded, shape, seed=seed)
    return tf.cast(image, tf.float32) / 16.0
  if seed is not None:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.stateless_random_crop(padded, shape, seed=crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return normalize(image, CIFAR10_MEAN, CIFAR10_STD)


def imagenet_train(jpeg: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """Inception crop (8-100% area, aspect 3/4-4/3), fused with JPEG decoding, then flip."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape = tf.image.extract_jpeg_shape(jpeg)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
    seed=crop_seed,
    min_object_covered=0.1,
    aspect_ratio_range=(3 / 4, 4 / 3),
    area_range=(0.08, 1.0),
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
  image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return normalize(tf.clip_by_value(image, 0.0, 255.0), IMAGENET_MEAN, IMAGENET_STD)


def imagenet_eval(jpeg: tf.Tensor, size: int) -> tf.Tensor:
  """Resize the shorter side to 256/224 * size, then centre-crop size x size."""
  image = tf.image.decode_jpeg(jpeg, channels=3)
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  short = float(round(256 * size / 224))
  new_hw = tf.cast(tf.math.round(hw * short / tf.reduce_min(hw)), tf.int32)
  new_hw = tf.maximum(new_hw, size)
  image = tf.image.resize(image, new_hw, method="bilinear", antialias=True)
  top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
  image = tf.image.crop_to_bounding_box(image, top, left, size, size)
  return normalize(tf.clip_by_value(image, 0.0, 255.0), IMAGENET_MEAN, IMAGENET_STD)


def augment_seed(seed: int, pos: tf.Tensor) -> tf.Tensor:
  """The stateless seed of the example at global stream position `pos`."""
  base = tf.constant([seed, AUGMENT_SALT], tf.int64)
  return tf.random.experimental.stateless_fold_in(base, tf.cast(pos, tf.int64))
