"""Every reference in the docs and the code resolves inside the repository.

* `README "Section"` / `docs/X.md "Section"` in the code names a heading that exists;
* markdown links in the README and docs/ point at files that exist, and their `#anchors` at
  headings (GitHub's slugs);
* repository paths in backticks (`configs/x.py`, `lr2vq_jax/data/`) or naming a file in plain text
  (configs/x.py) exist;
* nothing points outside the repository (notes the project does not ship).
"""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r'(README|docs/[\w-]+\.md) "([^"]+)"')
SOURCES = ("lr2vq_jax", "configs", "benchmarks", "examples", "launch")
DOCS = ("README.md", "docs", "launch/README.md", "lr2vq_jax/data/README.md")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A repository path in backticks: a top-level folder of the repo, then a path; an argument after
# ":" (configs/x.py:quick) or a space is not part of it.
TOP = ("configs", "benchmarks", "lr2vq_jax", "tests", "examples", "launch", "docs")
PATH = re.compile(r"`(?:\.\./)?((?:" + "|".join(TOP) + r")/[^`\s:]*)")
# ... and one in plain text, when it names a file (configs/default.py, docs/research.md).
PLAIN = re.compile(
  r"(?<![\w/.$-])((?:" + "|".join(TOP) + r")/[\w./{},-]*\.(?:py|md|sh|txt|json|png|npz))\b"
)
OUTSIDE = re.compile(
  r"\.\./shared|\bshared/reference|PAPER\.md|EXPERIMENTS\.md|DESIGN\.md|DESIGN §|ANCHORS\.md"
  r"|\bissue #?\d+"
)


def _files(folders, suffixes) -> list[Path]:
  out = []
  for name in folders:
    path = ROOT / name
    out += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
  return [p for p in out if p.suffix in suffixes]


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation and symbols dropped, spaces to '-'
  (letters, digits, combining marks such as the tilde of d̃, '_' and '-' stay)."""
  text = re.sub(r"`|\*\*", "", heading.strip()).lower()
  kept = (
    c
    for c in text
    if c in " -_" or unicodedata.category(c)[0] in "LMN"  # letters, marks, numbers
  )
  return "".join(kept).replace(" ", "-")


def _headings(path: Path) -> list[str]:
  text = path.read_text(encoding="utf-8")
  text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # comments in code blocks
  return [m.group(1).strip() for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)]


def _anchors(path: Path) -> set[str]:
  seen: dict[str, int] = {}
  out = set()
  for h in _headings(path):
    slug = _slug(h)
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    out.add(slug if n == 0 else f"{slug}-{n}")
  return out


def test_every_section_reference_resolves():
  refs = []
  for path in _files(SOURCES, (".py", ".sh", ".md")):
    for m in REFERENCE.finditer(path.read_text(encoding="utf-8")):
      refs.append((path.relative_to(ROOT), m.group(1), m.group(2)))
  assert len(refs) >= 5  # the pattern still finds the references it is meant to check
  missing = [
    f"{src}: {doc} {title!r}"
    for src, doc, title in refs
    if not any(
      h.startswith(title) for h in _headings(ROOT / ("README.md" if doc == "README" else doc))
    )
  ]
  assert not missing, "references to sections that do not exist:\n  " + "\n  ".join(missing)


def test_markdown_links_resolve():
  checked, broken = 0, []
  for doc in _files(DOCS, (".md",)):
    for m in LINK.finditer(doc.read_text(encoding="utf-8")):
      target = m.group(1)
      if re.match(r"[a-z]+:", target):  # https:, mailto:
        continue
      file, _, anchor = target.partition("#")
      dest = (doc.parent / file).resolve() if file else doc
      checked += 1
      if not dest.exists() or ROOT not in (dest, *dest.parents):
        broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file in the repo)")
      elif anchor and anchor not in _anchors(dest):
        broken.append(f"{doc.relative_to(ROOT)}: {target} (no heading with that anchor)")
  assert checked >= 10
  assert not broken, "broken links:\n  " + "\n  ".join(broken)


def _expand(path: str) -> list[str]:
  """`a/{b,c}_x.py` -> [a/b_x.py, a/c_x.py] (the first brace group, recursively)."""
  m = re.search(r"\{([^{}]*)\}", path)
  if not m:
    return [path]
  return [
    x for alt in m.group(1).split(",") for x in _expand(path[: m.start()] + alt + path[m.end() :])
  ]


def test_backticked_repo_paths_exist():
  checked, missing = 0, []
  for doc in _files((*DOCS, *SOURCES), (".md", ".py", ".sh")):
    text = doc.read_text(encoding="utf-8")
    for m in [*PATH.finditer(text), *PLAIN.finditer(text)]:
      raw = m.group(1).rstrip(".,;)")
      if re.search(r"[<>*…]|\bX\b|NAME|/\.\.\.|/[A-Za-z]\.\w+$", raw):  # a pattern, not a path
        continue
      for path in _expand(raw):
        checked += 1
        if not (ROOT / path).exists():
          missing.append(f"{doc.relative_to(ROOT)}: `{path}`")
  assert checked >= 20
  assert not missing, "paths that do not exist:\n  " + "\n  ".join(sorted(set(missing)))


@pytest.mark.parametrize("where", [DOCS, SOURCES, ("Makefile", "pyproject.toml", ".ci")])
def test_nothing_points_outside_the_repo(where):
  hits = []
  for path in _files(where, (".md", ".py", ".sh", ".toml", "")):
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
      if OUTSIDE.search(line):
        hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
  assert not hits, "references to notes outside the repository:\n  " + "\n  ".join(hits)
