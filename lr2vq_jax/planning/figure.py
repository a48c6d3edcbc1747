"""The plan's figure: per layer, bytes vs predicted loss of every candidate, the choice marked."""

from __future__ import annotations

from lr2vq_jax.core.accounting import MIB
from lr2vq_jax.planning.plan import Plan


def save_png(plan: Plan, path: str) -> None:
  """Writes the figure (matplotlib, Agg backend) to `path` (local or gs://, via etils.epath)."""
  import io

  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from etils import epath

  fig, ax = plt.subplots(figsize=(9, 6))
  colors = plt.get_cmap("viridis")
  n = max(len(plan.layers) - 1, 1)
  for i, lc in enumerate(plan.layers):
    color = colors(i / n)
    pts = sorted((c.bytes, max(lc.predicted(c), 1e-30)) for c in lc.candidates if not c.is_float)
    if pts:
      ax.scatter(*zip(*pts, strict=True), s=6, color=color, alpha=0.35)
    c = lc.chosen
    ax.scatter([c.bytes], [max(lc.predicted(c), 1e-30)], s=60, color=color, edgecolor="k",
               label=lc.path if len(plan.layers) <= 24 else None, zorder=3)  # fmt: skip
    if lc.reference is not None and not lc.reference.is_float:
      r = lc.reference
      ax.scatter([r.bytes], [max(lc.predicted(r), 1e-30)], marker="x", s=50, color=color, zorder=3)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("layer bytes (codes + fp16 codebook)")
  ax.set_ylabel("predicted loss increase ½·s·‖W − Ŵ‖²")
  ax.set_title(
    f"plan: {plan.total_bytes / MIB:.3f} MiB of {plan.target_bytes / MIB:.3f} MiB "
    "(dots: candidates, circles: chosen, ×: reference rules)",
    fontsize=9,
  )
  if len(plan.layers) <= 24:
    ax.legend(fontsize=7, ncol=2)
  ax.grid(True, which="both", alpha=0.2)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  epath.Path(path).write_bytes(buf.getvalue())
