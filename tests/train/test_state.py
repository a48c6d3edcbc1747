"""`create_train_state`: step 0 on the shardings `abstract_train_state` predicts, from a random init
or from given variables (kept exactly)."""

from __future__ import annotations

import jax
import numpy as np

from lr2vq_jax.train import trainer
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.state import abstract_train_state, create_train_state
from tests.support.paths import QUICK


def test_state_is_created_on_its_abstract_shapes_and_keeps_given_variables(tmp_path):
  stage = trainer.build_stage(load_config(QUICK), "float", str(tmp_path))
  args = (stage.model, stage.tx, stage.sample_input, stage.mesh)
  target = abstract_train_state(*args)
  state = create_train_state(*args, jax.random.key(0))
  same = lambda a, b: (a.shape, a.dtype, a.sharding) == (b.shape, b.dtype, b.sharding)  # noqa: E731
  assert jax.tree.all(jax.tree.map(same, state, target))
  assert int(state.step) == 0
  host = jax.device_get(state.variables())
  host["params"] = jax.tree.map(lambda x: x + 1.0, host["params"])
  again = create_train_state(*args, jax.random.key(1), host)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(again.variables()), host)
  assert jax.tree.all(jax.tree.map(same, again, target))
