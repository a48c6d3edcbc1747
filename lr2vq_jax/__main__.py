"""`python -m lr2vq_jax ...` is the `lr2vq` command."""

from lr2vq_jax.cli import main

if __name__ == "__main__":
  raise SystemExit(main())
