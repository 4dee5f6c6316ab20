"""The pure line parsers: every line gives a valid record or a reason, never an exception."""
import re

from hypothesis import given, settings, strategies as st
import pytest

from eta_tf import features
from pipelines import parsing as P

TS = 1511568000  # 2017-11-25, inside the default window


@pytest.mark.parametrize("line, expected", [
    (b"1,2,3,pv,%d" % TS, (1, (TS, 2, 3, features.BEHAVIOR_TYPES["pv"]))),
    (b"7,8,9,buy,%d" % TS, (7, (TS, 8, 9, features.BEHAVIOR_TYPES["buy"]))),
    (b"\xef\xbb\xbf1,2,3,cart,%d" % TS, (1, (TS, 2, 3, 2))),  # BOM tolerated
    (b"1,2,3,fav,%d\r" % TS, (1, (TS, 2, 3, 3))),  # CRLF tolerated
    (b" 1 ,\t2,3 , pv ,%d " % TS, (1, (TS, 2, 3, 1))),  # spaces around fields tolerated
    ("1,2,3,pv,%d" % TS, (1, (TS, 2, 3, 1))),  # str input works too
])
def test_behavior_valid(line, expected):
  assert P.parse_behavior_line(line) == (expected, None)


@pytest.mark.parametrize("line, reason", [
    (b"", P.REASON_EMPTY_LINE),
    (b"  \r", P.REASON_EMPTY_LINE),
    (b"\xef\xbb\xbf", P.REASON_EMPTY_LINE),
    (b"1,2,3,pv", P.REASON_WRONG_COLUMN_COUNT),
    (b"1,2,3,pv,%d,9" % TS, P.REASON_WRONG_COLUMN_COUNT),
    (b"1;2;3;pv;%d" % TS, P.REASON_WRONG_COLUMN_COUNT),
    (b"a,2,3,pv,%d" % TS, P.REASON_NON_INTEGER),
    (b"1,2.0,3,pv,%d" % TS, P.REASON_NON_INTEGER),
    (b"1,2,3,pv,1e9", P.REASON_NON_INTEGER),
    (b"+1,2,3,pv,%d" % TS, P.REASON_NON_INTEGER),
    (b"1_0,2,3,pv,%d" % TS, P.REASON_NON_INTEGER),  # int() would accept it; we do not
    (b"1,,3,pv,%d" % TS, P.REASON_NON_INTEGER),
    (b"\xff\xfe,2,3,pv,%d" % TS, P.REASON_NON_INTEGER),
    (b"0,2,3,pv,%d" % TS, P.REASON_NON_POSITIVE_ID),
    (b"1,-2,3,pv,%d" % TS, P.REASON_NON_POSITIVE_ID),
    (b"1,2,%d,pv,%d" % (1 << 63, TS), P.REASON_ID_TOO_LARGE),
    (b"1,2,3,pv,-5", P.REASON_TIMESTAMP_OUT_OF_RANGE),
    (b"1,2,3,pv,0", P.REASON_TIMESTAMP_OUT_OF_RANGE),  # a missing-value placeholder
    (b"1,2,3,pv,%d" % (TS * 1000), P.REASON_TIMESTAMP_OUT_OF_RANGE),  # milliseconds
    (b"1,2,3,pv,%d" % P.DEFAULT_MAX_TIMESTAMP, P.REASON_TIMESTAMP_OUT_OF_RANGE),
    (b"1,2,3,pv,99999999999999999999999", P.REASON_TIMESTAMP_OUT_OF_RANGE),
    (b"1,2,3,click,%d" % TS, P.REASON_UNKNOWN_BEHAVIOR_TYPE),
    (b"1,2,3,PV,%d" % TS, P.REASON_UNKNOWN_BEHAVIOR_TYPE),
])
def test_behavior_rejected(line, reason):
  assert P.parse_behavior_line(line) == (None, reason)


def test_timestamp_window_is_configurable():
  line = b"1,2,3,pv,%d" % TS
  assert P.parse_behavior_line(line, TS, TS + 1)[1] is None
  assert P.parse_behavior_line(line, TS + 1, TS + 2) == (None, P.REASON_TIMESTAMP_OUT_OF_RANGE)
  assert P.parse_behavior_line(line, TS - 1, TS) == (None, P.REASON_TIMESTAMP_OUT_OF_RANGE)


@pytest.mark.parametrize("line, expected", [
    (b"1,2,3,%d,1" % TS, ((1, (TS, 2, 3, 1)), None)),
    (b"1,2,3,%d,0\r" % TS, ((1, (TS, 2, 3, 0)), None)),
    (b"1,2,3,%d,2" % TS, (None, P.REASON_BAD_LABEL)),
    (b"1,2,3,%d,yes" % TS, (None, P.REASON_BAD_LABEL)),
    (b"1,2,3,pv,%d" % TS, (None, P.REASON_NON_INTEGER)),
    (b"1,2,3,%d" % TS, (None, P.REASON_WRONG_COLUMN_COUNT)),
    (b"", (None, P.REASON_EMPTY_LINE)),
])
def test_impression_lines(line, expected):
  assert P.parse_impression_line(line) == expected


def test_dead_letter_line_keeps_one_row_per_line():
  out = P.dead_letter_line(P.SOURCE_BEHAVIORS, P.REASON_NON_INTEGER, b"a\xff\rb\nc")
  assert out == "behaviors\tnon_integer_field\ta\\xff\\rb\\nc"
  assert "\n" not in out and "\r" not in out


# --- property-based: an independent regex reference of the documented grammar ----------
_FIELD = rb"[ \t]*(-?[0-9]+)[ \t]*"
_BEHAVIOR_RE = re.compile(rb"^" + b",".join([_FIELD] * 3) +
                          rb",[ \t]*(pv|cart|fav|buy)[ \t]*," + _FIELD + rb"$")


def _reference_behavior(line: bytes):
  """Accepted (user, (ts, item, cat, code)) by the documented rules, else None."""
  if line.startswith(b"\xef\xbb\xbf"):
    line = line[3:]
  line = line.rstrip(b"\r\n")
  m = _BEHAVIOR_RE.match(line)
  if not m:
    return None
  user, item, cat, ts = (int(m.group(i)) for i in (1, 2, 3, 5))
  if min(user, item, cat) <= 0 or max(user, item, cat) > P.MAX_ID:
    return None
  if not P.DEFAULT_MIN_TIMESTAMP <= ts < P.DEFAULT_MAX_TIMESTAMP:
    return None
  return user, (ts, item, cat, features.BEHAVIOR_TYPES[m.group(4).decode()])


def _check_result(result):
  assert isinstance(result, tuple) and len(result) == 2
  record, reason = result
  assert (record is None) != (reason is None)
  if reason is not None:
    assert reason in P.REASONS
  return record


_ints = st.one_of(st.integers(-5, 5), st.integers(-(1 << 70), 1 << 70),
                  st.integers(P.DEFAULT_MIN_TIMESTAMP - 2, P.DEFAULT_MIN_TIMESTAMP + 2))
_field = st.one_of(_ints.map(lambda i: str(i).encode()),
                   st.sampled_from([b"pv", b"cart", b"fav", b"buy", b"PV", b"", b" ", b"1.5",
                                    b"+3", b"1_0", b"\xef\xbb\xbf", b"\r", b"\t7 ", b"%d" % TS]),
                   st.binary(max_size=6))
_structured_lines = st.tuples(st.booleans(), st.lists(_field, min_size=0, max_size=7),
                              st.booleans()).map(
    lambda t: (b"\xef\xbb\xbf" if t[0] else b"") + b",".join(t[1]) + (b"\r" if t[2] else b""))


@settings(max_examples=400, deadline=None)
@given(st.one_of(_structured_lines, st.binary(max_size=40)))
def test_behavior_parser_total_and_matches_reference(line):
  record = _check_result(P.parse_behavior_line(line))
  assert record == _reference_behavior(line)
  # The str entry point (general path, no fast path) agrees with the bytes one.
  try:
    text = line.decode("utf-8")
  except UnicodeDecodeError:
    return
  assert P.parse_behavior_line(text) == P.parse_behavior_line(line)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_structured_lines, st.text(max_size=40)))
def test_impression_parser_total(line):
  record = _check_result(P.parse_impression_line(line))
  if record is not None:
    user, (ts, item, cat, label) = record
    assert min(user, item, cat) > 0 and label in (0, 1)
    assert P.DEFAULT_MIN_TIMESTAMP <= ts < P.DEFAULT_MAX_TIMESTAMP
