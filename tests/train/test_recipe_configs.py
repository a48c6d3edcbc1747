"""The chosen LR²VQ recipe is what users get: every LR²VQ config uses it, ablations change one thing."""

import importlib.util
from pathlib import Path

import pytest

from lr2vq_jax.train import recipes
from lr2vq_jax.train.config import layer_config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # collectable from any folder


def _ablations():
  spec = importlib.util.spec_from_file_location("digits_ablations", CONFIGS / "digits_ablations.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _get(config, dotted: str):
  section, name = dotted.split(".")
  return config[section][name]


def _flat(config) -> dict:
  return {
    f"{s}.{k}": v
    for s, section in config.items()
    if hasattr(section, "items")
    for k, v in section.items()
  } | {k: v for k, v in config.items() if not hasattr(v, "items")}


def test_default_config_is_the_chosen_recipe():
  ablations = _ablations()
  default = load_config(str(CONFIGS / "default.py"))
  recipe = load_config(str(CONFIGS / "digits_ablations.py:recipe,m9"))
  assert ablations.RECIPE, "the ablations chose no recipe"
  for key, value in ablations.RECIPE.items():
    assert _get(default, key) == value, key
  assert default.d == ablations.RECIPE_D["m9"] == recipe.d
  assert default.preset == recipe.preset
  # The LR²VQ stages are configured identically (the ablation file sets τ per stage).
  for stage in ("lowrank", "quantize"):
    assert layer_config(default, stage) == layer_config(recipe, stage), stage
    mine, theirs = default[stage].to_dict(), recipe[stage].to_dict()
    assert {**mine, "tau_alpha": 0} == {**theirs, "tau_alpha": 0}, stage


@pytest.mark.parametrize(
  "name",
  ["cifar10_resnet18_lr2vq.py", *sorted(p.name for p in CONFIGS.glob("imagenet_*_lr2vq.py"))],
)
def test_every_lr2vq_config_uses_the_general_recipe(name):
  config = load_config(str(CONFIGS / name))
  assert recipes.LR2VQ_RECIPE
  for key, value in recipes.LR2VQ_RECIPE.items():
    assert _get(config, key) == value, (name, key)
  ratio = config.lowrank.num_epochs / config.quantize.num_epochs
  assert ratio == pytest.approx(recipes.LOWRANK_EPOCH_RATIO), name


def test_the_digits_recipe_is_the_general_recipe():
  ablations = _ablations()
  for key, value in recipes.LR2VQ_RECIPE.items():
    assert ablations.RECIPE[key] == value
  default = load_config(str(CONFIGS / "default.py"))
  assert default.lowrank.num_epochs == recipes.lowrank_epochs(default.quantize.num_epochs)


@pytest.mark.parametrize("variant", sorted(_ablations().VARIANTS))
def test_each_ablation_changes_exactly_its_own_settings(variant):
  ablations = _ablations()
  reference = _flat(load_config(str(CONFIGS / "digits_ablations.py:reference,m18")))
  config = _flat(load_config(str(CONFIGS) + f"/digits_ablations.py:{variant},m18"))
  changed = {k for k in config if config[k] != reference.get(k)}
  assert changed == set(ablations.VARIANTS[variant]), variant


def test_ablation_config_rejects_unknown_variants():
  with pytest.raises(ValueError, match="argument 'sharpen,m9'; expected"):
    load_config(str(CONFIGS / "digits_ablations.py:sharpen,m9"))
