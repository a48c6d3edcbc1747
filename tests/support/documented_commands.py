"""The commands README.md and the config headers print: fenced bash lines, inline code that
starts with a program, and each configs/*.py docstring's `Run…:` lines (continuations joined)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support.paths import ROOT

PROGRAMS = ("lr2vq ", "python ", ".venv/bin/", "make ", "pip ", "tfds ")


def _logical_lines(text: str) -> list[str]:
  out, cur = [], ""
  for raw in text.splitlines():
    line = raw.strip()
    cur = f"{cur} {line[:-1].strip()}".strip() if line.endswith("\\") else f"{cur} {line}".strip()
    if not line.endswith("\\"):
      out.append(cur)
      cur = ""
  return [ln for ln in out if ln]


def _strip_comment(line: str) -> str:
  return re.sub(r"\s+#\s.*$", "", line).strip()


def readme_commands(path: Path = ROOT / "README.md") -> list[str]:
  text = path.read_text(encoding="utf-8")
  cmds = []
  for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, flags=re.S):
    cmds += [_strip_comment(ln) for ln in _logical_lines(block) if not ln.startswith("#")]
  prose = re.sub(r"```.*?```", "", text, flags=re.S)
  cmds += [c for c in re.findall(r"`([^`\n]+)`", prose) if c.startswith(PROGRAMS)]
  return [c for c in cmds if c]


def header_commands(path: Path) -> list[str]:
  """Commands on the `Run…:` lines of a config's docstring (and `make demo (= …)` forms)."""
  doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
  cmds, lines = [], doc.splitlines()
  for i, line in enumerate(lines):
    m = re.match(r"^Run[\w ]*:\s+(.*)$", line)
    if not m:
      continue
    text = m.group(1)
    while text.rstrip().endswith("\\") and i + 1 < len(lines):
      i += 1
      text = text.rstrip()[:-1] + " " + lines[i].strip()
    first = re.split(r"\s{2,}\(|\s+\(=", text)[0].strip()
    cmds.append(first)
    cmds += re.findall(r"\(=\s*([^)]+)\)", text)  # `make demo   (= python -m …)`
  return [c.strip() for c in cmds]


def documented_commands() -> dict[str, list[str]]:
  """{source file: commands in document order} for README.md and every configs/*.py."""
  out = {"README.md": readme_commands()}
  for path in sorted((ROOT / "configs").glob("*.py")):
    out[f"configs/{path.name}"] = header_commands(path)
  return out
