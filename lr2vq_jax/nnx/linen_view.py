"""An NNX model seen through linen's `init` / `apply` over linen-layout variables.

Training loops written for linen (this project's `lr2vq_jax.train` among them) keep their
variables in dicts ({"params", "batch_stats", "quant"}) and call `model.init(rng, x, train=...)` and
`model.apply(variables, x, train=..., mutable=[...])`. `LinenView(factory)` gives an NNX model
that interface: each `apply` merges the mode's NNX graph with the given arrays, sets NNX's mode
(`model.train()` / `model.eval()`), runs the NNX code and hands the changed collections back. The
variables are `lq.nnx.to_variables`'s layout, which is the linen one, so the dict-based
conversions, checkpoints, sharding rules and export run unchanged; `lq.nn.quantize_model` and
`lq.nn.plan_model` accept a view through its `lr2vq_quantize` / `lr2vq_plan` methods.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, traverse_util

from lr2vq_jax.core.kernel import DKM_LISTS, LOSSES, QuantConfig
from lr2vq_jax.core.mode import Mode, as_mode, deprecated_stage, renamed_stage
from lr2vq_jax.core.rules import LayerPlan, Rule, as_rules
from lr2vq_jax.nnx.interop import linen_keys, to_variables
from lr2vq_jax.nnx.kernel import QuantizedKernel
from lr2vq_jax.nnx.layers import initial_arrays
from lr2vq_jax.nnx.transform import iter_layers, plan_model
from lr2vq_jax.nnx.variables import Losses


def init_mode(model: nnx.Module, rules, mode: Mode | str, key: jax.Array, config: QuantConfig):
  """Gives the rules' layers random `mode` kernels, as a linen `init` in that mode does (SVD
  of the random kernel, k random rows of Z as codebook); in place, returns `model`."""
  mode = as_mode(mode)
  layers = dict(iter_layers(model))
  for i, (path, plan) in enumerate(sorted(plan_model(model, rules).items())):
    value = layers[path].kernel[...]
    rows = plan.to_rows(jnp.asarray(value, jnp.float32))
    arrays = initial_arrays(rows, plan, mode, jax.random.fold_in(key, i), config.tau_alpha)
    layers[path].kernel = QuantizedKernel(
      plan, mode, arrays, config.settings(mode), config=config, param_dtype=value.dtype
    )
  return model


def init_stage(model: nnx.Module, rules, stage: Mode | str, key: jax.Array, config: QuantConfig):
  """Deprecated name of `init_mode`."""
  warnings.warn("lq.nnx.init_stage is deprecated, use init_mode", DeprecationWarning, stacklevel=2)
  return init_mode(model, rules, stage, key, config)


@dataclasses.dataclass(frozen=True)
class LinenView:
  """`factory(rngs=...)` (an NNX float model) in `mode` under `rules`, with linen's interface."""

  factory: Callable[..., nnx.Module]
  rules: tuple[Rule, ...] = ()
  mode: Mode | str = Mode.FLOAT
  config: QuantConfig = QuantConfig()

  def __eq__(self, other: object) -> bool:
    """Views of equal factories (a `functools.partial` compares by its function and arguments)
    in the same mode, rules and config are equal: a stage built twice keys the same jitted steps."""
    if type(other) is not type(self):
      return NotImplemented
    return self._key() == other._key()

  def __hash__(self) -> int:
    return hash(self._key())

  def _key(self) -> tuple:
    factory = self.factory
    if isinstance(factory, functools.partial):
      parts = (factory.func, factory.args, tuple(sorted(factory.keywords.items())))
      try:
        hash(parts)
        factory = parts
      except TypeError:  # an unhashable argument: the partial itself (compared by identity)
        pass
    return (factory, self.rules, self.mode, self.config)

  @property
  def stage(self) -> Mode:
    """Deprecated: the view's `mode`."""
    return deprecated_stage(self)

  def build(self, rng: jax.Array) -> nnx.Module:
    """A fresh NNX model in this mode, randomly initialised from `rng`."""
    model = self.factory(rngs=nnx.Rngs(rng))
    if self.mode != Mode.FLOAT:
      init_mode(model, self.rules, self.mode, jax.random.fold_in(rng, 1), self.config)
    return model

  @functools.cached_property
  def _graph(self):
    """(GraphDef, abstract State, NNX path → linen key) of this mode's model."""
    model = nnx.eval_shape(lambda: self.build(jax.random.key(0)))
    graphdef, state = nnx.split(model)
    return graphdef, state, linen_keys(model)

  def init(self, rng: jax.Array, *args, **kwargs) -> dict:
    """Linen-layout variables of a randomly initialised model (no inputs needed; accepted)."""
    del args, kwargs
    return to_variables(self.build(rng))

  def bind_variables(self, variables) -> nnx.Module:
    """The mode's NNX model holding `variables` (linen layout; extra leaves are ignored).

    Training DKM's carried state (`dkm_lists`) that `variables` lack starts as a linen layer
    makes it: zeros (lists ranked at the first training call, a cold start)."""
    graphdef, abstract, keys = self._graph
    flat = traverse_util.flatten_dict(_plain(variables))
    leaves = []
    for path, var in nnx.to_flat_state(abstract):
      key = keys.get(tuple(path))
      if key is not None and key not in flat:
        if key[0] != DKM_LISTS:
          raise KeyError(f"variables have no {'/'.join(key)!r} (the model's mode is {self.mode})")
        spec = var.get_value()  # abstract: shape and dtype
        leaves.append((path, var.replace(jnp.zeros(spec.shape, spec.dtype))))
        continue
      leaves.append((path, var if key is None else var.replace(flat[key])))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))

  def apply(
    self,
    variables,
    x,
    *,
    train: bool = False,
    quant_train: bool | None = None,
    mutable: bool | Sequence[str] = False,
    rngs: Any = None,
  ):
    """`model(x)` in NNX's train or eval mode (`quant_train` overrides the kernels' mode); with
    `mutable`, also the updated `batch_stats` and the captured `losses`, as linen returns them."""
    del rngs  # the models run here draw no random numbers in their forward pass
    model = self.bind_variables(variables)
    model.train() if train else model.eval()
    if quant_train is not None:
      model.set_attributes(QuantizedKernel, deterministic=not quant_train)
    collections = [] if mutable is False else list(mutable)
    if DKM_LISTS not in collections:
      _rank_every_call(model)
    updates = {}
    if LOSSES in collections:
      y, losses = nnx.capture(model, Losses)(x)
      updates[LOSSES] = nnx.to_pure_dict(losses)
    else:
      y = model(x)
    for collection in ("batch_stats", DKM_LISTS):
      if collection in collections and collection in (written := to_variables(model)):
        updates[collection] = written[collection]
    return (y, updates) if collections else y

  # -- the hooks lq.nn.quantize_model / plan_model call -----------------------------------------

  def lr2vq_quantize(
    self,
    rules,
    mode: Mode | str = Mode.QUANTIZE,
    config: QuantConfig | None = None,
    *,
    stage: Mode | str | None = None,
  ) -> LinenView:
    """This view with `rules` in `mode` (`stage=` is the deprecated name of `mode=`)."""
    mode = as_mode(renamed_stage(mode, stage, Mode.QUANTIZE, "LinenView.lr2vq_quantize"))
    return dataclasses.replace(
      self, rules=as_rules(rules), mode=mode, config=config or QuantConfig()
    )

  def lr2vq_plan(self, rules: Rule | Sequence[Rule]) -> dict[str, LayerPlan]:
    return plan_model(nnx.eval_shape(lambda: self.factory(rngs=nnx.Rngs(0))), rules)


def _rank_every_call(model: nnx.Module) -> None:
  """Sets the carried lists' call counters to 0, so a call that cannot write `dkm_lists` ranks
  each row's candidates afresh, as a linen layer does without the collection mutable."""
  for _, node in nnx.iter_graph(model):
    if isinstance(node, QuantizedKernel) and hasattr(node, "count"):
      node.count[...] = jnp.zeros((), jnp.int32)


def _plain(tree) -> dict:
  """Nested plain dicts (FrozenDicts and States too) for flattening."""
  if hasattr(tree, "items"):
    return {k: _plain(v) for k, v in tree.items()}
  return tree
