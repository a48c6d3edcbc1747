"""Compress to a size: per-layer (k, m, d̃) for a byte budget (`plan`), its figure and rules."""

from lr2vq_jax.planning.plan import NO_DATA, LayerChoice, Plan, plan

__all__ = ["NO_DATA", "LayerChoice", "Plan", "plan"]
