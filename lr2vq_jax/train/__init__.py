"""Training system: input, state, steps, checkpoints, metrics (imports TensorFlow and clu)."""
