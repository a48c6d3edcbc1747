"""What `lr2vq plan` does with an experiment config: weights, batches, budget, then `plan`.

Weights: the config's finished float stage (`float_dir`), else a random init from the shapes (the
plan then only sees each layer's shape). Batches: the config's training split, when weights are
trained and the data is there; otherwise the plan says it has no data and uses weight error only.
"""

from __future__ import annotations

import re

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20}
UNITS["gib"] = 2**30


def parse_bytes(text: str) -> float:
  """ "1.0MiB", "3185KiB", "1.5MB", "14000" → bytes; ValueError with the accepted forms."""
  match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
  unit = match.group(2).lower() if match else None
  if match is None or unit not in UNITS or float(match.group(1)) <= 0:
    raise ValueError(
      f"target bytes {text!r}: write a positive number with an optional unit "
      "(B, KB, MB, GB, KiB, MiB, GiB), e.g. 1.0MiB"
    )
  return float(match.group(1)) * UNITS[unit]


def int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
  """ "2,4,8" → (2, 4, 8); None → None; ValueError naming `flag` otherwise."""
  if text is None:
    return None
  try:
    values = tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError:
    values = ()
  if not values or min(values) < 1:
    raise ValueError(f"{flag} {text!r}: write positive integers separated by commas, e.g. 2,4,8")
  return values


def load_weights(config, float_dir: str | None, seed: int):
  """(float model, variables, source text): the float stage's, or a random init from shapes."""
  import jax
  import jax.numpy as jnp

  from lr2vq_jax.train.config import config_model

  if float_dir:
    from lr2vq_jax.train.stage_setup import build_stage, restore_final

    stage = build_stage(config, "float", "")  # its model and state layout: nothing is written
    variables = jax.device_get(restore_final(stage, float_dir).variables())
    return stage.float_model, variables, f"trained weights of {float_dir}"
  model, (size, _, channels) = config_model(config)
  size = min(size, 32)  # kernel shapes do not depend on the image size
  shape = (1, size, size, channels)
  init = jax.jit(lambda key: model.init(key, jnp.zeros(shape), train=False))
  variables = init(jax.random.key(seed, impl="rbg"))  # rbg: XLA:CPU compiles a ResNet init faster
  return model, variables, f"no trained weights: random init from the shapes (seed {seed})"


def training_batches(config, count: int) -> tuple[list | None, str]:
  """`count` training batches of the config's data, or (None, why not)."""
  from lr2vq_jax.train import input_pipeline

  try:
    it = input_pipeline.build_input(config.data, split="train")
    return [next(it) for _ in range(count)], f"{count} batches of {config.data.name} train"
  except Exception as e:  # noqa: BLE001 - any data failure means: plan without data, say why
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None, f"data {config.data.name!r} not readable ({first[:160]})"


def run(args, config, target_bytes: float | None) -> int:
  """`lr2vq plan`: plan for the config's model, print it, write the rules file and figure."""
  import sys

  import jax

  from lr2vq_jax.planning.plan import NO_DATA, plan
  from lr2vq_jax.planning.rules_file import write_rules_file
  from lr2vq_jax.train.config import config_rules

  model, variables, source = load_weights(config, args.float_dir, args.seed)
  batches, data = None, "no trained weights, so no sensitivity"
  if args.float_dir and args.batches:
    batches, data = training_batches(config, args.batches)
  elif args.float_dir:
    data = "--batches 0"
  cap = config.get("d") if args.d is None else args.d
  choices = {name: int_list(getattr(args, name), f"--{name}") for name in ("ms", "ks")}
  result = plan(
    model,
    variables,
    target_bytes=target_bytes,
    ratio=args.ratio,
    batches=batches,
    d=int(cap) if cap else None,
    layers=args.layers,
    keep_float=args.keep_float,
    store=args.store,
    reference=config_rules(config),
    key=jax.random.key(args.seed),
    **{name: values for name, values in choices.items() if values},
  )
  print(f"config {args.config}: model {config.model}; {source}")
  if batches is None:
    print(f"note: {data}; {NO_DATA}", file=sys.stderr)
  print(result.table())
  print(f"rules: {result.rules_text()}")
  if args.out:
    header = (
      f"lr2vq plan --config {args.config}\n{result.totals_line()}\nsensitivity: {result.basis}"
    )
    write_rules_file(args.out, result.rules_text(), header)
    print(f"wrote {args.out}: train with --config {args.config} --config.rules=@{args.out}")
  if args.png:
    from lr2vq_jax.planning.figure import save_png

    save_png(result, args.png)
    print(f"wrote {args.png}")
  return 0
