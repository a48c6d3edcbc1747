"""One-factor ablations of the LR²VQ recipe on the embedded digits task, at both block sizes.

Run all:   python benchmarks/ablations.py --seeds 5     (table: docs/research.md, ~40 min, 2 cores)
Run one:   python -m lr2vq_jax.main --config configs/digits_ablations.py:orthonormal_p,m18 \
             --workdir runs/orthonormal_p_m18
Hardware:  2 CPU cores; one variant at one block size and seed ≈ 30 s after the float model.
Arg:       "<variant>,m9" or "<variant>,m18" (k = 16; conv2 and conv3 compressed, as configs/default.py),
           optionally ",d<d̃>" to override d̃ (the sweep that chooses it).

Every variant changes exactly one thing of `reference`, the earlier recipe (written out
here, so that later changes to configs/default.py do not change what these rows mean). `recipe`
is the combination chosen on the validation split, which configs/default.py uses. The baselines
run plain (`pq`, `dkm`: the pareto.py runs) and as `pq_recipe` / `dkm_recipe`: with the recipe's
method-independent parts (distillation, BN re-estimation) and as many fine-tuning epochs as LR²VQ
spends on low-rank pre-training and fine-tuning together, so that the comparison is at equal
training help and budget.
"""

import os

import ml_collections

from lr2vq_jax.train.config import load_config

# The per-block-size settings of `reference`: preset, d̃ (the earlier default) and the DKM τ
# multipliers the prototype chose on an inner validation split.
BLOCKS = {
  "m9": dict(preset="digits_small_blocks", d=3, quantize_tau=0.03, dkm_tau=0.01),
  "m18": dict(preset="digits_large_blocks", d=3, quantize_tau=0.003, dkm_tau=0.03),
}
REFERENCE = {
  "lowrank.num_epochs": 10,
  "lowrank.distill": 0.0,
  "quantize.distill": 0.0,
  "quantize.tau_final_factor": 1.0,
  "quantize.bn_reestimate_batches": 0,
  "quant.dkm_iters": 3,
  "quant.dkm_refresh": 1,  # top-t lists ranked every step
  "quant.dkm_warm": False,  # each step's updates start from the codebook
  "quant.commitment": 0.0,
  "quant.projection": "learned",
  "quant.store": "codebook",
}
VARIANTS = {
  "reference": {},
  "lowrank_0": {"lowrank.num_epochs": 0},
  "lowrank_30": {"lowrank.num_epochs": 30},
  "lowrank_60": {"lowrank.num_epochs": 60},
  "distill": {"lowrank.distill": 0.5, "quantize.distill": 0.5},
  "tau_anneal": {"quantize.tau_final_factor": 0.1},
  "dkm_iters_1": {"quant.dkm_iters": 1},
  "dkm_iters_5": {"quant.dkm_iters": 5},
  "beta_0.1": {"quant.commitment": 0.1},
  "beta_1": {"quant.commitment": 1.0},
  "orthonormal_p": {"quant.projection": "orthonormal"},
  "store_factored": {"quant.store": "factored"},
  "bn_reestimate": {"quantize.bn_reestimate_batches": 20},
}
# The chosen recipe (docs/research.md "Ablations"): the variants that lowered the mean validation loss of
# the exported artifact at both block sizes (5 seeds each): longer low-rank pre-training and an
# orthonormal P. Rejected there: distillation and τ annealing (better at one block size, worse at
# the other), β > 0, 1 or 5 DKM iterations; BN re-estimation and factored storage change nothing
# measurable in accuracy (factored storage saves 2-6% of the bytes).
# Its DKM runs the fast path: one warm-started update per step on top-8 lists re-ranked every 16
# steps, at accuracy within seed noise of `reference`'s 3 cold updates ranked every step and
# ~1.1x a float step (benchmarks/results/dkm_warm_accuracy.txt).
FAST_DKM = {"quant.dkm_iters": 1, "quant.dkm_refresh": 16, "quant.dkm_warm": True}
RECIPE: dict = {"lowrank.num_epochs": 30, "quant.projection": "orthonormal", **FAST_DKM}
# d̃ of the recipe, chosen by the lowest mean validation loss of its sweep (docs/research.md "Choosing d̃").
RECIPE_D = {"m9": 4, "m18": 2}
# Changes tried on top of the recipe (at RECIPE_D), kept when they lower the validation loss again.
ON_RECIPE = {
  # the recipe with `reference`'s DKM schedule: 3 cold updates, ranked every step
  "recipe_dkm_iters_3": {"quant.dkm_iters": 3, "quant.dkm_refresh": 1, "quant.dkm_warm": False},
  "recipe_learned_p": {"quant.projection": "learned"},  # is the orthonormal P still needed?
}
BASELINE_HELP = ("distill", "bn_reestimate_batches")  # what pq/dkm also get from RECIPE
METHOD_STAGE = {"lr2vq": "float,lowrank,quantize", "pq": "float,pq", "dkm": "float,dkm"}


def apply(config: ml_collections.ConfigDict, overrides: dict) -> None:
  for dotted, value in overrides.items():
    section, name = dotted.split(".")
    config[section][name] = value


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, _, rest = (arg or "recipe,m9").partition(",")
  blocks, _, d = rest.partition(",")
  known = {*VARIANTS, *ON_RECIPE, "recipe", "pq", "dkm", "pq_recipe", "dkm_recipe"}
  if variant not in known or blocks not in BLOCKS or not (d == "" or d[1:].isdigit()):
    raise ValueError(
      f"configs/digits_ablations.py: argument {arg!r}; expected '<variant>,m9|m18[,d<d̃>]' with "
      f"variant one of {sorted(known)}"
    )
  config = load_config(os.path.join(os.path.dirname(__file__), "default.py"))
  b = BLOCKS[blocks]
  config.preset, config.d = b["preset"], b["d"]
  config.quantize.tau_alpha, config.dkm.tau_alpha = b["quantize_tau"], b["dkm_tau"]
  apply(config, REFERENCE)
  baselines = ("pq", "dkm", "pq_recipe", "dkm_recipe")
  method = variant.split("_")[0] if variant in baselines else "lr2vq"
  if variant in VARIANTS:
    apply(config, VARIANTS[variant])
  elif variant == "recipe" or variant in ON_RECIPE:
    apply(config, {**RECIPE, **ON_RECIPE.get(variant, {})})
    config.d = RECIPE_D[blocks]
  elif variant.endswith("_recipe"):  # the baseline with the recipe's method-independent help
    helps = {k.split(".")[1]: v for k, v in RECIPE.items() if k.split(".")[1] in BASELINE_HELP}
    apply(config, {f"{method}.{name}": v for name, v in helps.items()})
    # and as many fine-tuning epochs as LR²VQ's low-rank pre-training and fine-tuning together
    epochs = [RECIPE.get(f"{s}.num_epochs", config[s].num_epochs) for s in ("lowrank", "quantize")]
    config[method].num_epochs = sum(epochs)
  if d:  # the d̃ sweep of the recipe (benchmarks/ablations.py --ds)
    config.d = int(d[1:])
  config.stages = METHOD_STAGE[method]
  return config
