"""Fault injection for the data pipeline: hostile lines never raise, never get lost.

A 5000-digit field must not raise (Python's int-string limit) and fail the whole Beam job.
Here: the parser on huge fields and fuzz input, the dead-letter escaping round trip, and
the whole Beam job on a fuzz corpus (balanced, every reject dead-lettered).
"""
import glob
import os
import re

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from eta_tf import features
from pipelines import build_dataset, parsing as P, synthetic
from pipelines import dataset_stats
from pipelines import transforms as T

TS = 1511568000  # 2017-11-25
HUGE = b"9" * 5000


@pytest.mark.parametrize("line, reason", [
    (b"1," + HUGE + b",3,pv,%d" % TS, P.REASON_ID_TOO_LARGE),  # the reproduction
    (HUGE + b",2,3,pv,%d" % TS, P.REASON_ID_TOO_LARGE),
    (b"1,-" + HUGE + b",3,pv,%d" % TS, P.REASON_NON_POSITIVE_ID),
    (b"1,2,3,pv," + HUGE, P.REASON_TIMESTAMP_OUT_OF_RANGE),
    (b"1,2,3,pv,-" + HUGE, P.REASON_TIMESTAMP_OUT_OF_RANGE),
    (b"1,2,3,pv," + b"1" * 21, P.REASON_TIMESTAMP_OUT_OF_RANGE),  # just past the bound
    (b"1,2," + HUGE + b"x,pv,%d" % TS, P.REASON_NON_INTEGER),
])
def test_huge_fields_get_their_reason(line, reason):
  for parse in (P.parse_behavior_line, lambda l: P.parse_behavior_line(l.decode())):
    assert parse(line) == (None, reason)
  fields = line.split(b",")
  imp = b",".join(fields[:3] + [fields[4], b"1"])  # impression order: ..., timestamp, label
  assert P.parse_impression_line(imp) == (None, reason)


def test_leading_zeros_do_not_count_as_digits():
  zeros = b"0" * 4990
  assert P.parse_behavior_line(b"1," + zeros + b"2,3,pv,%d" % TS) == (
      (1, (TS, 2, 3, features.BEHAVIOR_TYPES["pv"])), None)


# --- dead letter: one row per line, three columns, reversible ------------------------------
_UNESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|[tnr\\])")


def _unescape(text: str) -> bytes:
  """Inverse of dead_letter_line's escaping (an independent reference, bytes out)."""
  out, pos = bytearray(), 0
  for m in _UNESCAPE.finditer(text):
    out += text[pos:m.start()].encode("utf-8")
    code = m.group(1)
    if code[0] == "x":
      out.append(int(code[1:], 16))  # ASCII control or an undecodable byte
    elif code[0] == "u":
      out += chr(int(code[1:], 16)).encode("utf-8")
    else:
      out += {"t": b"\t", "n": b"\n", "r": b"\r", "\\": b"\\"}[code]
    pos = m.end()
  return bytes(out + text[pos:].encode("utf-8"))


_SEPARATORS = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]))


@pytest.mark.parametrize("raw", [
    b"a\xff\rb\nc", b"\x00\x1c\x1d\x1e\x85\x0b\x0c", "x\u2028y\u2029z\x85".encode(),
    "tab\there \\x41 back\\slash".encode(), b"\xed\xa0\x80 lone surrogate bytes",
])
def test_dead_letter_escapes_every_separator(raw):
  out = P.dead_letter_line(P.SOURCE_BEHAVIORS, P.REASON_NON_INTEGER, raw)
  assert len(out.splitlines()) == 1 and not set(out.split("\t", 2)[2]) & set(_SEPARATORS)
  source, reason, escaped = out.split("\t")
  assert (source, reason) == (P.SOURCE_BEHAVIORS, P.REASON_NON_INTEGER)
  assert _unescape(escaped) == raw


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=60), st.text(max_size=40).map(
    lambda t: t.encode("utf-8", "surrogatepass"))))
def test_dead_letter_is_one_line_and_reversible(raw):
  out = P.dead_letter_line(P.SOURCE_IMPRESSIONS, P.REASON_BAD_LABEL, raw)
  assert len(out.splitlines()) == 1
  parts = out.split("\t")
  assert len(parts) == 3 and _unescape(parts[2]) == raw
  out.encode("utf-8")  # writable as UTF-8 (no lone surrogates left)


# --- the whole Beam job on hostile input -----------------------------------------------------
def _fuzz_corpus(valid_lines, seed=0, size=300):
  """Seeded mutations of valid lines: control chars, separators, huge and odd fields."""
  rng = np.random.default_rng(seed)
  inserts = [b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x1e", b"\x7f", b"\xc2\x85", b"\xff",
             "\u2028".encode(), "\u2029".encode(), b"\r", b"\t", b"\\", b",", HUGE, b"-",
             b"\xef\xbb\xbf", b"9" * 25, "\u00e9".encode()]
  corpus = [b"1," + HUGE + b",3,pv,%d" % TS]
  for _ in range(size):
    line = bytearray(valid_lines[rng.integers(len(valid_lines))].encode())
    for _ in range(rng.integers(1, 4)):
      at = int(rng.integers(len(line) + 1))
      if rng.random() < 0.7:
        line[at:at] = inserts[rng.integers(len(inserts))]
      else:
        del line[at:at + int(rng.integers(1, 4))]
    corpus.append(bytes(line).replace(b"\n", b"\\n"))  # one input row per corpus entry
  return corpus


@pytest.fixture(scope="module")
def fuzz_job(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("faults")
  log = synthetic.generate_log(synthetic.SyntheticConfig(num_users=6, seed=3))
  corpus = _fuzz_corpus(log.lines)
  path = tmp / "log.csv"
  path.write_bytes(b"\n".join([line.encode() for line in log.lines] + corpus) + b"\n")
  stats = build_dataset.run([f"--input={path}", f"--output_dir={tmp / 'out'}"])
  return log, corpus, tmp / "out", stats


def _dead_letter(out_dir):
  lines = []
  for name in glob.glob(os.path.join(out_dir, features.DEAD_LETTER_PREFIX + "-*")):
    with open(name, encoding="utf-8", newline="") as f:
      lines += f.read().split("\n")[:-1]
  return lines


def test_fuzz_corpus_through_the_job_is_balanced(fuzz_job):
  log, corpus, out_dir, stats = fuzz_job
  rows = stats["rows"]["behaviors"]
  assert rows["input"] == len(log.lines) + len(corpus)
  assert rows["balanced"] and rows["rejected"] > len(corpus) // 2
  assert rows["rejected_by_reason"][P.REASON_ID_TOO_LARGE] >= 1
  dead = _dead_letter(out_dir)
  assert len(dead) == rows["rejected"]
  assert all(len(line.split("\t")) == 3 for line in dead)
  # Every rejected corpus line is in the dead letter, byte for byte after unescaping.
  rejected = sorted(_unescape(line.split("\t")[2]) for line in dead)
  # (Beam's reader takes "\r\n" as the line terminator: a trailing CR is not in the row.)
  delivered = [line[:-1] if line.endswith(b"\r") else line for line in corpus]
  expected = sorted(line for line in delivered if P.parse_behavior_line(line)[1] is not None)
  assert rejected == expected


def test_parser_exception_becomes_parse_error_row(tmp_path, monkeypatch):
  real = P.parse_behavior_line

  def flaky(line, *args):
    if b"boom" in line:
      raise RuntimeError("unforeseen")
    return real(line, *args)

  monkeypatch.setitem(P.PARSERS, P.SOURCE_BEHAVIORS, flaky)
  path = tmp_path / "log.csv"
  path.write_bytes(b"1,2,3,pv,%d\n1,3,3,pv,%d\nboom\n" % (TS, TS + 5))
  stats = build_dataset.run([f"--input={path}", f"--output_dir={tmp_path / 'out'}",
                             "--allow_skewed_split"])
  rows = stats["rows"]["behaviors"]
  assert rows["rejected_by_reason"] == {P.REASON_PARSE_ERROR: 1} and rows["balanced"]
  assert _dead_letter(tmp_path / "out") == ["behaviors\tparse_error\tboom"]


def test_unbalanced_job_fails(tmp_path, monkeypatch):
  real = T._build_sequence

  def loses_a_count(user_id, events_by_source):
    for out in real(user_id, events_by_source):
      if isinstance(out, dict) or hasattr(out, "value"):
        out.value[T.accepted_key(P.SOURCE_BEHAVIORS)] -= 1  # one row "lost"
      yield out

  monkeypatch.setattr(T, "_build_sequence", loses_a_count)
  path = tmp_path / "log.csv"
  path.write_bytes(b"1,2,3,pv,%d\n1,3,3,pv,%d\n" % (TS, TS + 5))
  with pytest.raises(Exception, match="not balanced.*behaviors: input 2 != accepted 1"):
    build_dataset.run([f"--input={path}", f"--output_dir={tmp_path / 'out'}"])


def test_check_balanced_names_the_source():
  stats = {"rows": {"behaviors": {"input": 3, "accepted": 1, "rejected": 1,
                                  "balanced": False}}}
  with pytest.raises(dataset_stats.UnbalancedStatsError, match="behaviors: input 3"):
    dataset_stats.check_balanced(stats)
  stats["rows"]["behaviors"].update(accepted=2, balanced=True)
  dataset_stats.check_balanced(stats)
