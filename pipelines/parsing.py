"""Pure, Beam-free parsing and validation of raw log lines (docs/DESIGN.md §2).

Every raw line ends up either as a valid record or as a rejection reason; nothing raises and
nothing is dropped silently. The functions here are plain Python so that they can be unit-
and property-tested directly, and so that the Beam DoFn wrapping them stays a one-liner.

Lines are handled as *bytes* (the pipeline reads text files with a bytes coder): a file with
invalid UTF-8 must not crash the job, and splitting bytes avoids a decode per line.

Tolerated (documented in docs/pipeline.md, "Bad input"):
  * a UTF-8 byte-order mark at the start of a line (first line of a file, or of each file
    when several files were concatenated) is stripped;
  * CRLF line endings: a trailing carriage return is stripped (Beam's text reader already
    removes "\\r\\n" terminators; a stray "\\r" before EOF is stripped here);
  * ASCII spaces/tabs around a field are stripped.
Everything else that is not exactly `int,int,int,type,int` (behaviors) or
`int,int,int,int,0|1` (impressions) is rejected with one of the REASON_* codes below.
"""
from typing import Optional, Tuple, Union

from eta_tf import features

# Default timestamp window: any plausible Unix time in seconds, 1970-01-01T00:00:01 ..
# 2100-01-01 (lower bound inclusive, upper exclusive). 0/negative values are missing-value
# placeholders, larger ones are usually milliseconds. Real logs have outliers outside their
# collection window (the public Taobao file: days weeks before its 9 days); the split does
# not depend on them (a quantile of targets), and --min_timestamp/--max_timestamp narrow
# the window explicitly (rows outside go to the dead letter).
DEFAULT_MIN_TIMESTAMP = 1
DEFAULT_MAX_TIMESTAMP = 4102444800

# Largest id a TF int64 feature can carry.
MAX_ID = (1 << 63) - 1

# Rejection reasons (stable strings: they are stats.json keys and dead-letter columns).
REASON_EMPTY_LINE = "empty_line"
REASON_WRONG_COLUMN_COUNT = "wrong_column_count"
REASON_NON_INTEGER = "non_integer_field"
REASON_NON_POSITIVE_ID = "non_positive_id"
REASON_ID_TOO_LARGE = "id_too_large"
REASON_UNKNOWN_BEHAVIOR_TYPE = "unknown_behavior_type"
REASON_TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
REASON_BAD_LABEL = "bad_label"
# An exception the parser did not foresee (a bug, not bad input): the pipeline's parse DoFn
# turns it into a dead-letter row instead of failing the job.
REASON_PARSE_ERROR = "parse_error"
REASONS = (REASON_EMPTY_LINE, REASON_WRONG_COLUMN_COUNT, REASON_NON_INTEGER,
           REASON_NON_POSITIVE_ID, REASON_ID_TOO_LARGE, REASON_UNKNOWN_BEHAVIOR_TYPE,
           REASON_TIMESTAMP_OUT_OF_RANGE, REASON_BAD_LABEL, REASON_PARSE_ERROR)

# Names of the two inputs (dead-letter column 1 and stats.json sections).
SOURCE_BEHAVIORS = "behaviors"
SOURCE_IMPRESSIONS = "impressions"

_BOM = b"\xef\xbb\xbf"
_FIELD_WHITESPACE = b" \t"
_BEHAVIOR_CODES = {name.encode(): code for name, code in features.BEHAVIOR_TYPES.items()}
_LABELS = {b"0": 0, b"1": 1}
# The fast path calls int() on digit fields directly: only on lines short enough that no
# field can exceed _MAX_DIGITS by much (a Taobao row is ~40 bytes).
_FAST_PATH_MAX_BYTES = 96


# Accepted rows are plain int tuples (Beam encodes plain tuples of ints fast; NamedTuples
# would fall back to pickling on every shuffle). Field order = the sort order of a user's
# events, so sorting the tuples sorts by time first.
#   behavior:   (timestamp, item_id, category_id, behavior_type code 1..4)
#   impression: (timestamp, item_id, category_id, label 0|1)
TIMESTAMP, ITEM_ID, CATEGORY_ID, KIND = 0, 1, 2, 3  # KIND = behavior type or label
Event = Tuple[int, int, int, int]

# ((user_id, event), None) on success, (None, reason) on failure.
ParseResult = Tuple[Optional[Tuple[int, Event]], Optional[str]]


# Longest digit string converted exactly. Any longer value (after leading zeros) is far
# outside every valid id/timestamp range, and converting it could hit Python's int-string
# conversion limit (4300 digits -> ValueError) or cost quadratic time.
_MAX_DIGITS = 20
_HUGE = 10 ** _MAX_DIGITS  # > MAX_ID and > any plausible timestamp


def _to_int(field: bytes) -> Optional[int]:
  """Decimal integer with an optional minus sign, else None (no '+', '_', spaces inside).

  Values with more than _MAX_DIGITS significant digits come back as +-_HUGE, which every
  range check rejects with the reason it would give the exact value.
  """
  sign = 1
  if field[:1] == b"-":
    sign, field = -1, field[1:]
  if not field.isdigit():
    return None
  if len(field) > _MAX_DIGITS:
    field = field.lstrip(b"0") or b"0"
    if len(field) > _MAX_DIGITS:
      return sign * _HUGE
  return sign * int(field)


def _without_bom(line: Union[bytes, str]) -> bytes:
  """The line as bytes (a str encoded as UTF-8) without a leading byte-order mark."""
  if isinstance(line, str):
    line = line.encode("utf-8", "surrogatepass")
  return line[len(_BOM):] if line.startswith(_BOM) else line


def _split_fields(line: Union[bytes, str], num_columns: int):
  """Strips BOM/CR/whitespace and splits on commas; returns (fields, None) or (None, reason)."""
  line = _without_bom(line).rstrip(b"\r\n")
  if not line.strip():
    return None, REASON_EMPTY_LINE
  fields = line.split(b",")
  if len(fields) != num_columns:
    return None, REASON_WRONG_COLUMN_COUNT
  return [f.strip(_FIELD_WHITESPACE) for f in fields], None


def user_field_id(line: Union[bytes, str]) -> Optional[int]:
  """The user id the parsers would read from a line's first field, or None if unreadable.

  For every accepted row it equals the parsed user_id (same BOM/whitespace/CR handling
  and _to_int); used to route lines to user shards before parsing (pipelines.sharded).
  """
  field = _without_bom(line).split(b",", 1)[0].rstrip(b"\r\n").strip(_FIELD_WHITESPACE)
  return _to_int(field)


def _parse_ids_and_time(fields, min_timestamp: int, max_timestamp: int):
  """Validates (user, item, category, timestamp) fields; returns (ints, None) or (None, reason)."""
  values = [_to_int(f) for f in fields]
  if any(v is None for v in values):
    return None, REASON_NON_INTEGER
  *ids, timestamp = values
  if any(v <= 0 for v in ids):
    return None, REASON_NON_POSITIVE_ID
  if any(v > MAX_ID for v in ids):
    return None, REASON_ID_TOO_LARGE
  if not min_timestamp <= timestamp < max_timestamp:
    return None, REASON_TIMESTAMP_OUT_OF_RANGE
  return values, None


def _parse_row(line, kind_column: int, num_columns: int, kind_codes: dict, kind_reason: str,
               min_timestamp: int, max_timestamp: int) -> ParseResult:
  """General path: four integer columns (user, item, category, timestamp) + a kind column."""
  fields, reason = _split_fields(line, num_columns)
  if reason:
    return None, reason
  kind = fields.pop(kind_column)
  values, reason = _parse_ids_and_time(fields, min_timestamp, max_timestamp)
  if reason:
    return None, reason
  code = kind_codes.get(kind)
  if code is None:
    return None, kind_reason
  user_id, item_id, category_id, ts = values
  return (user_id, (ts, item_id, category_id, code)), None


def parse_behavior_line(line: Union[bytes, str],
                        min_timestamp: int = DEFAULT_MIN_TIMESTAMP,
                        max_timestamp: int = DEFAULT_MAX_TIMESTAMP) -> ParseResult:
  """Parses `user_id,item_id,category_id,behavior_type,timestamp`.

  Returns ((user_id, (timestamp, item_id, category_id, type_code)), None) for a valid row and (None, reason) otherwise; never
  raises. Checks run in a fixed order (empty line, column count, integers, id sign, id
  size, timestamp window, behavior type) so that a row with several faults always gets the same reason.
  """
  # Fast path for the common clean row (cheaper than the general path); anything
  # unusual -- BOM, CR, spaces, signs, bad values -- falls through to the general path.
  if isinstance(line, bytes) and len(line) <= _FAST_PATH_MAX_BYTES:
    fields = line.split(b",")
    if len(fields) == 5:
      user, item, category, behavior, timestamp = fields
      code = _BEHAVIOR_CODES.get(behavior)
      if (code and user.isdigit() and item.isdigit() and category.isdigit() and
          timestamp.isdigit()):
        user_id, item_id, category_id, ts = int(user), int(item), int(category), int(timestamp)
        if (0 < user_id <= MAX_ID and 0 < item_id <= MAX_ID and 0 < category_id <= MAX_ID
            and min_timestamp <= ts < max_timestamp):
          return (user_id, (ts, item_id, category_id, code)), None
  return _parse_row(line, features.BEHAVIOR_LOG_COLUMNS.index("behavior_type"),
                    len(features.BEHAVIOR_LOG_COLUMNS), _BEHAVIOR_CODES,
                    REASON_UNKNOWN_BEHAVIOR_TYPE, min_timestamp, max_timestamp)


def parse_impression_line(line: Union[bytes, str],
                          min_timestamp: int = DEFAULT_MIN_TIMESTAMP,
                          max_timestamp: int = DEFAULT_MAX_TIMESTAMP) -> ParseResult:
  """Parses `user_id,item_id,category_id,timestamp,label` (label 0 or 1); never raises."""
  return _parse_row(line, features.IMPRESSION_LOG_COLUMNS.index("label"),
                    len(features.IMPRESSION_LOG_COLUMNS), _LABELS, REASON_BAD_LABEL,
                    min_timestamp, max_timestamp)


PARSERS = {SOURCE_BEHAVIORS: parse_behavior_line, SOURCE_IMPRESSIONS: parse_impression_line}


def _dead_letter_escapes() -> dict:
  """str.translate table: every char that could break a line or a column -> an escape."""
  table = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}  # one byte each
  table.update({code: f"\\u{code:04x}" for code in range(0x80, 0xA0)})  # C1: 2 UTF-8 bytes
  table.update({ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r",
                0x2028: "\\u2028", 0x2029: "\\u2029"})
  # Undecodable bytes arrive as surrogate escapes U+DC80..U+DCFF (see dead_letter_line).
  table.update({0xDC00 + byte: f"\\x{byte:02x}" for byte in range(0x80, 0x100)})
  return table


_DEAD_LETTER_ESCAPES = _dead_letter_escapes()


def escape_raw(line: Union[bytes, str]) -> str:
  """A raw input line as one printable line without TABs (the dead letter's last column).

  Undecodable bytes become \\xNN, TAB/CR/LF \\t \\r \\n, the other C0 controls and DEL
  \\xNN, C1 controls and U+2028/2029 \\uNNNN and a backslash \\\\: one line for any line
  splitter, and reversible. A str is taken as decoded with errors="surrogateescape".
  """
  if isinstance(line, str):
    try:
      line = line.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates: their UTF-8-style bytes, escaped
      line = line.encode("utf-8", "surrogatepass")
  return line.decode("utf-8", "surrogateescape").translate(_DEAD_LETTER_ESCAPES)


def dead_letter_line(source: str, reason: str, line: Union[bytes, str]) -> str:
  """`source<TAB>reason<TAB>raw line`, the raw line escaped onto one line (escape_raw).

  The raw line is kept so a rejected row can be inspected; one rejected row is always
  exactly one line of three columns.
  """
  return f"{source}\t{reason}\t{escape_raw(line)}"
