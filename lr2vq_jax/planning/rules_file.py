"""Rules files: one rule per line in `config.rules` syntax, '#' lines are comments.

`lr2vq plan --out FILE` writes one; a config takes it as `config.rules = "@FILE"` (local or gs://,
read through etils.epath).
"""

from __future__ import annotations

from etils import epath


def read_rules_text(path: str) -> str:
  """The rules of file `path` as one `config.rules` string ("rule;rule;...")."""
  p = epath.Path(path)
  if not p.is_file():
    raise FileNotFoundError(f"rules file {path!r} not found (write one with `lr2vq plan --out`)")
  lines = [ln.strip() for ln in p.read_text().splitlines()]
  rules = [ln for ln in lines if ln and not ln.startswith("#")]
  if not rules:
    raise ValueError(f"rules file {path!r} holds no rule")
  return ";".join(rules)


def write_rules_file(path: str, rules_text: str, header: str = "") -> None:
  """Writes `rules_text` ("rule;rule;...") one rule per line, after '#'-prefixed `header` lines."""
  lines = [f"# {h}" if h else "#" for h in header.splitlines()]
  lines += [r for r in rules_text.split(";") if r]
  epath.Path(path).write_text("\n".join(lines) + "\n")
