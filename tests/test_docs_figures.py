"""Every decimal figure in README.md and docs/*.md is held by a committed results file, and
neither the docs nor the code carry issue numbers or commit hashes.

"Held" (what `unheld_figures` checks): a decimal number printed in the docs' prose or
tables (not in code spans or code blocks, which hold commands and flag values) equals, at
the number of decimals it is printed with, a number that a file under bench/results/
holds:
* a number in a results JSON (numeric values, and numbers inside its strings), or a
  decimal printed in a results markdown file (REPORT.md, COUNT_FLOOR.md: rendered from
  the JSON by named commands);
* for a figure in GiB / MiB / KiB / GB / MB: also a `*bytes*` value converted to that
  unit; for a percentage: also a JSON value times 100;
* sign-insensitive ("trails by 0.0118" may quote -0.0118);
* with a unit, only numbers of that kind: a ratio `1.62x` must be a ratio a results file
  prints as such (REPORT.md's "1.62x") or a JSON value under a ratio/speedup key; `ms`
  and `ns` figures must be JSON values under keys naming them (median_ms, ns_per_pair,
  ...) or figures the results markdown prints with that unit.
Not figures: version numbers (`3.11` after Python, anything with two dots), arXiv ids,
values after "default", link targets, and the one section titled "The paper's published
figures" (the paper's numbers, labelled as not measured here; only one such section may
exist in all the docs).
"""
import decimal
import glob
import json
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
PAPER_SECTION = "The paper's published figures"
BYTE_UNITS = {"GiB": 2 ** 30, "MiB": 2 ** 20, "KiB": 2 ** 10, "GB": 1e9, "MB": 1e6}
UNIT_RE = r"(?:\s?(GiB|MiB|KiB|GB|MB|ms|ns|µs|x|%|s|h)(?![\w/])|(M|k)(?![\w/]))?"
SCALES = {"M": 1e6, "k": 1e3}  # 4.16M items: 4,162,024 at that rounding
# A decimal, not part of a longer dotted token (versions, ids, paths), with its unit.
FIGURE_RE = re.compile(r"(?<![\w.\-])([-+−]?\d[\d,]*\.\d+)(?![\w.]*\d)(?!\.\w)" + UNIT_RE)
NOT_FIGURE_BEFORE = re.compile(
    r"(arXiv\s*|Python\s|TensorFlow\s|TF\s|Keras\s|Beam\s|tensorflow-recommenders\s|"
    r"default\s|defaults? to\s|=\s?)$")

# --- hygiene: issue references and commit hashes, in docs and code ---------------------
ISSUE_RE = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
# 7-40 hex digits with at least one digit and one letter, not a 0x literal or part of a
# longer word (hex constants in code are 0x...; plain numbers have no letter).
HASH_RE = re.compile(r"(?<![\w])(?!0x)(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w])")


def doc_paths():
  return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs",
                                                                          "*.md")))


def _numbers_in_json(value, key=""):
  """(key, number) for every number in a parsed JSON value, strings' numbers included."""
  if isinstance(value, bool):
    return
  if isinstance(value, (int, float)):
    yield key, float(value)
  elif isinstance(value, str):
    for token in re.findall(r"\d+(?:\.\d+)?", value):
      yield key, float(token)
  elif isinstance(value, dict):
    for k, v in value.items():
      yield from _numbers_in_json(v, str(k))
  elif isinstance(value, list):
    for v in value:
      yield from _numbers_in_json(v, key)


class Pools:
  """What the committed results hold, by kind of figure."""

  def __init__(self, results_dir=RESULTS):
    self.general, self.ratio, self.ms, self.ns, self.percent = set(), set(), set(), set(), set()
    self.bytes = {unit: set() for unit in BYTE_UNITS}
    for path in glob.glob(os.path.join(results_dir, "*.json")):
      with open(path) as f:
        for key, number in _numbers_in_json(json.load(f)):
          self._add_json(key.lower(), number)
    for path in glob.glob(os.path.join(results_dir, "*.md")):
      with open(path, encoding="utf-8") as f:
        text = f.read()
      for match in FIGURE_RE.finditer(text):
        number, unit = _value(match.group(1)), match.group(2)
        self.general.add(number)
        {"x": self.ratio, "ms": self.ms, "ns": self.ns, "%": self.percent}.get(
            unit, self.general).add(number)
        if unit in BYTE_UNITS:
          self.bytes[unit].add(number)

  def _add_json(self, key, number):
    self.general.add(number)
    self.percent.add(number * 100)
    if "ratio" in key or "speedup" in key:
      self.ratio.add(number)
    if key.endswith("_ms") or key.startswith("ms") or "_ms_" in key:
      self.ms.add(number)
    if "ns_per" in key or key.endswith("_ns"):
      self.ns.add(number)
    if "bytes" in key:  # a table cell under a "MiB" header has no unit of its own
      for unit, size in BYTE_UNITS.items():
        self.bytes[unit].add(number / size)
        self.general.add(number / size)
    for unit in BYTE_UNITS:
      if unit.lower() in key.split("_"):
        self.bytes[unit].add(number)

  def pool(self, unit):
    if unit in BYTE_UNITS:
      return self.bytes[unit] | self.general
    return {"x": self.ratio, "ms": self.ms, "ns": self.ns}.get(unit, self.general) | (
        self.percent if unit == "%" else set())


def _value(text: str) -> float:
  return float(text.replace(",", "").replace("−", "-").replace("+", ""))


def held(figure: str, pool, scale: float = 1.0) -> bool:
  """True if some number of `pool`, rounded to the figure's decimals (in units of
  `scale`), prints as it."""
  decimals = len(figure.split(".")[1])
  value = abs(decimal.Decimal(repr(_value(figure)))) * decimal.Decimal(repr(scale))
  # Exactly: a printed 1.95 is not a 1.9 nor a 2.0 (it could have been either).
  tolerance = decimal.Decimal(5).scaleb(-decimals - 1) * decimal.Decimal(repr(scale))
  return any(abs(abs(decimal.Decimal(repr(v))) - value) < tolerance for v in pool)


def prose(text: str):
  """(line number, line) of the text outside code blocks, with code spans, link targets,
  HTML comments and the paper's section blanked."""
  in_code = in_paper = False
  for number, line in enumerate(text.splitlines(), 1):
    if line.lstrip().startswith("```"):
      in_code = not in_code
      continue
    if line.startswith("#"):
      in_paper = PAPER_SECTION in line
    if in_code or in_paper:
      continue
    line = re.sub(r"`[^`]*`", " ", line)
    line = re.sub(r"\]\([^)]*\)", "] ", line)
    line = re.sub(r"<!--.*?-->|https?://\S+", " ", line)
    yield number, line


def unheld_figures(text: str, pools: Pools):
  """['line N: figure' ...] for the figures of `text` no results file holds."""
  out = []
  for number, line in prose(text):
    for match in FIGURE_RE.finditer(line):
      if NOT_FIGURE_BEFORE.search(line[:match.start()]):
        continue
      figure, unit, scale = match.group(1), match.group(2), match.group(3)
      if not held(figure, pools.pool(unit), SCALES.get(scale, 1.0)):
        out.append(f"line {number}: {figure}{' ' + unit if unit else scale or ''}")
  return out


@pytest.fixture(scope="module")
def pools():
  return Pools()


@pytest.mark.parametrize("path", doc_paths(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_decimal_figure_is_held_by_a_results_file(path, pools):
  with open(path, encoding="utf-8") as f:
    missing = unheld_figures(f.read(), pools)
  assert not missing, (f"{os.path.relpath(path, ROOT)}: figures no file under "
                       f"bench/results/ holds (take them from a results file or drop "
                       f"them): {missing}")


def test_the_papers_figures_have_one_labelled_section():
  sections = [(os.path.relpath(p, ROOT), line) for p in doc_paths()
              for line in open(p, encoding="utf-8").read().splitlines()
              if line.startswith("#") and PAPER_SECTION in line]
  assert len(sections) == 1 and "not measured here" in sections[0][1], sections


def test_the_check_catches_figures_that_contradict_the_results(pools):
  """The figures the docs once carried against the results files are caught; the ones
  the results files print pass."""
  text = ("ETA is 1.9x / 4.8x cheaper with XLA, 2.0x; the kernel costs "
          "3.2 ns per pair.\nWith XLA din_long takes 2.10x / 2.47x ETA's time; "
          "12.24 ns per pair; 0.81 GiB at 16M events; eta 0.7892 ± 0.0035.\n"
          "```\npython -m x --eval_fraction=0.37\n```\nPython 3.11, `--frac=0.123`.\n"
          "## The paper's published figures (not measured here)\nETA .8721, 0.9999\n")
  missing = unheld_figures(text, pools)
  assert {m.split(": ")[1] for m in missing} == {
      "1.9 x", "4.8 x", "2.0 x", "3.2 ns"}, missing


def test_held_allows_the_printed_rounding_only():
  assert held("0.85", {0.8493}) and held("0.8", {0.8493}) and held("−0.0118", {-0.01181})
  assert not held("0.86", {0.8493}) and not held("0.850", {0.8494})
  assert not held("1.9", {1.95}) and not held("2.0", {1.95}) and held("4.16", {4162024}, 1e6)


def _tracked(*patterns):
  out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout.split()
  return [p for p in out if os.path.exists(os.path.join(ROOT, p))]


def hygiene_violations(text: str):
  """['line N: match' ...]: issue numbers and commit-hash-like hex in `text`."""
  out = []
  for number, line in enumerate(text.splitlines(), 1):
    for match in list(ISSUE_RE.finditer(line)) + list(HASH_RE.finditer(line)):
      out.append(f"line {number}: {match.group(0)}")
  return out


@pytest.mark.parametrize("path", _tracked("*.py", "*.md"))
def test_no_issue_numbers_or_commit_hashes(path):
  """Every tracked .py and .md file (docs, code, tests, results prose)."""
  with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
    violations = hygiene_violations(f.read())
  assert not violations, f"{path}: {violations}"


def test_hygiene_check_catches_references_and_hashes():
  issue, commit = "iss" + "ue 13", "8988" + "29a"  # split: this file must pass the check
  assert hygiene_violations(f"as {issue} says\nat commit {commit}\nIss" + "ue #4") == [
      f"line 1: {issue}", f"line 2: {commit}", "line 3: Iss" + "ue #4"]
  assert hygiene_violations("seed 0x9E3779B97F4A7C15, 4162024 items, deadbeef, "
                            "a decade") == []


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_docs_resolve():
  """Every relative link of README.md and docs/*.md names a file that exists and, with an
  #anchor, a heading of that file (headings move with the docs: this catches it)."""
  anchors, texts = {}, {}
  for path in doc_paths():
    texts[path] = open(path, encoding="utf-8").read()
    in_code, anchors[path] = False, set()
    for line in texts[path].splitlines():
      in_code ^= line.lstrip().startswith("```")
      if not in_code and line.startswith("#"):
        anchors[path].add(_slug(line.lstrip("#")))
  broken = []
  for path, text in texts.items():
    for match in re.finditer(r"\]\(([^)#\s]*)(#[^)\s]+)?\)", text):
      target, anchor = match.group(1), match.group(2)
      if target.startswith(("http://", "https://", "mailto:")):
        continue
      resolved = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target \
          else path
      if not os.path.exists(resolved):
        broken.append(f"{os.path.relpath(path, ROOT)}: {target}")
      elif anchor and resolved in anchors and anchor[1:] not in anchors[resolved]:
        broken.append(f"{os.path.relpath(path, ROOT)}: {target}{anchor}")
  assert not broken, broken
