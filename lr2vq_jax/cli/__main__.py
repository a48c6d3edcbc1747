"""`python -m lr2vq_jax.cli ...` is the `lr2vq` command."""

from lr2vq_jax.cli.main import main

if __name__ == "__main__":
  raise SystemExit(main())
