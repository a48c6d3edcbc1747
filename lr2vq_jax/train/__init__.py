"""Training system: input, state, steps, checkpoints, metrics (TensorFlow only in tf.data input)."""
