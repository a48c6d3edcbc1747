"""Rank-r subvector data with isotropic noise: where low-rank clustering should beat plain PQ."""

import numpy as np

N, M, R, K, SIGMA = 2048, 8, 2, 64, 0.2
SHAPE = (N * M // 64, 64)  # a Dense kernel whose subvectors are exactly X


def low_rank_data(seed=0, n=N, m=M, r=R, sigma=SIGMA):
  """X = A·B + noise: r orthonormal directions of unit variance, isotropic noise of std sigma."""
  rng = np.random.default_rng(seed)
  basis = np.linalg.qr(rng.normal(size=(m, r)))[0].T
  return (rng.normal(size=(n, r)) @ basis + sigma * rng.normal(size=(n, m))).astype(np.float32)
