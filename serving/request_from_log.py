r"""A score_candidates request from a user's raw log rows (Taobao UserBehavior format).

    python -m serving.request_from_log --log=behaviors.csv --user_id=42 \
        --candidates=1001:7,1002:7 > request.json
    python -m serving.client --signature=score_candidates --input=request.json

The log rows are `user_id,item_id,category_id,behavior_type,timestamp` with behavior_type
pv / cart / fav / buy (a .gz file is read as gzip), exactly what `pipelines.build_dataset`
reads: each row is parsed by the pipeline's own parser (pipelines.parsing) and coded by the
one feature contract (eta_tf.features: pv=1 cart=2 fav=3 buy=4), and the history is built
as the training samples' is: the user's behaviors strictly before the request time, sorted
by time, exact duplicate rows removed, the most recent --max_len kept. A row of the user
that the pipeline would reject stops the command with its line number, the field and the
value; other users' rows are skipped unread. The request is checked with the client's own
checks (serving.inputs) before it is written. Imports neither TensorFlow nor Beam.
"""
import argparse
import gzip
import json
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from eta_tf import features as F
from pipelines import parsing
from pipelines import records
from serving import inputs as inputs_lib

_ID_COLUMNS = ("user_id", "item_id", "category_id")


class LogRowError(ValueError):
  """A log row the pipeline would reject: line number, field and value in the message."""


def describe_rejection(line: Union[bytes, str], reason: str) -> str:
  """"field=value: what is wrong" for a row `parsing.parse_behavior_line` rejected."""
  text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
  fields = [f.strip(" \t") for f in text.lstrip("\ufeff").rstrip("\r\n").split(",")]
  columns = F.BEHAVIOR_LOG_COLUMNS
  if reason == parsing.REASON_EMPTY_LINE:
    return "empty line"
  if reason == parsing.REASON_WRONG_COLUMN_COUNT:
    return f"{len(fields)} columns, expected {len(columns)} ({','.join(columns)})"
  named = dict(zip(columns, fields))
  behavior = named["behavior_type"]
  numbers = [(name, named[name]) for name in (*_ID_COLUMNS, "timestamp")]

  def first(test):
    return next(((n, v) for n, v in numbers if test(n, v)), (None, None))

  if reason == parsing.REASON_NON_INTEGER:
    name, value = first(lambda n, v: not v.lstrip("-").isdigit() or v.startswith("--"))
    return f"{name}={value!r}: not an integer"
  if reason == parsing.REASON_NON_POSITIVE_ID:
    name, value = first(lambda n, v: n in _ID_COLUMNS and int(v) <= 0)
    return f"{name}={value}: ids are positive (0 is padding)"
  if reason == parsing.REASON_ID_TOO_LARGE:
    name, value = first(lambda n, v: n in _ID_COLUMNS and int(v) > parsing.MAX_ID)
    return f"{name}={value}: larger than int64"
  if reason == parsing.REASON_TIMESTAMP_OUT_OF_RANGE:
    return (f"timestamp={named['timestamp']}: not unix seconds in "
            f"[{parsing.DEFAULT_MIN_TIMESTAMP}, {parsing.DEFAULT_MAX_TIMESTAMP})")
  if reason == parsing.REASON_UNKNOWN_BEHAVIOR_TYPE:
    return f"behavior_type={behavior!r}: not one of {', '.join(F.BEHAVIOR_TYPES)}"
  return reason


def user_events(lines: Iterable[Union[bytes, str]], user_id: int) -> np.ndarray:
  """The user's rows of a behavior log as parsed events, int64 [N, 4] in
  pipelines.parsing's column order (timestamp, item, category, behavior code); raises
  LogRowError for a row of the user (or a row whose user cannot be read) that the
  pipeline would reject."""
  events = []
  for number, line in enumerate(lines, 1):
    owner = parsing.user_field_id(line)
    if owner is not None and owner != user_id:
      continue
    parsed, reason = parsing.parse_behavior_line(line)
    if reason == parsing.REASON_EMPTY_LINE:
      continue
    if reason:
      row = parsing.escape_raw(line.rstrip(b"\n" if isinstance(line, bytes) else "\n"))
      raise LogRowError(f"line {number}: {describe_rejection(line, reason)} ({reason}; "
                        f"row: {row})")
    events.append(parsed[1])
  return np.asarray(events, np.int64).reshape(-1, len(records.COLUMNS))


def request_from_events(events: np.ndarray, candidates: Sequence[Tuple[int, int]],
                        request_timestamp: Optional[int] = None,
                        max_len: Optional[int] = None) -> Dict[str, object]:
  """The score_candidates inputs: history = events strictly before request_timestamp
  (default: one second after the last event), sorted, exact duplicates removed, the last
  `max_len` kept; candidates = (item_id, category_id) pairs. Checked by serving.inputs."""
  rows, _ = records.sort_unique(events)
  if request_timestamp is None:
    request_timestamp = int(rows[-1, parsing.TIMESTAMP]) + 1 if len(rows) else 1
  rows = rows[rows[:, parsing.TIMESTAMP] < request_timestamp]
  if max_len:
    rows = rows[-max_len:]
  column = {F.HIST_ITEM_ID: parsing.ITEM_ID, F.HIST_CATEGORY_ID: parsing.CATEGORY_ID,
            F.HIST_BEHAVIOR_TYPE: parsing.KIND, F.HIST_TIMESTAMP: parsing.TIMESTAMP}
  request = {name: rows[:, index].tolist() for name, index in column.items()}
  request[F.REQUEST_TIMESTAMP] = int(request_timestamp)
  request[F.CANDIDATE_ITEM_ID] = [int(item) for item, _ in candidates]
  request[F.CANDIDATE_CATEGORY_ID] = [int(category) for _, category in candidates]
  inputs_lib.validate_inputs(F.SCORE_CANDIDATES, request)
  return request


def parse_candidates(text: str) -> List[Tuple[int, int]]:
  """"item:category,item:category" -> [(item, category)]; ValueError naming the pair."""
  pairs = []
  for pair in filter(None, (p.strip() for p in text.split(","))):
    item, sep, category = pair.partition(":")
    try:
      if not sep:
        raise ValueError
      item_id, category_id = int(item), int(category)
    except ValueError:
      raise ValueError(f"--candidates: {pair!r} is not item_id:category_id") from None
    if item_id <= 0 or category_id <= 0:
      raise ValueError(f"--candidates: {pair!r}: ids are positive (0 is padding)")
    pairs.append((item_id, category_id))
  if not pairs:
    raise ValueError("--candidates: give at least one item_id:category_id")
  return pairs


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m serving.request_from_log",
      description="Write a score_candidates request (JSON, for python -m serving.client "
                  "--signature=score_candidates --input=FILE) from a user's rows of a "
                  "Taobao-format behavior log (user_id,item_id,category_id,"
                  "pv|cart|fav|buy,timestamp).",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--log", required=True, help="behavior log (CSV, .gz read as gzip; "
                                                   "- for stdin)")
  parser.add_argument("--user_id", type=int, required=True, help="whose history to send")
  parser.add_argument("--candidates", required=True,
                      help="items to score: item_id:category_id pairs, comma-separated")
  parser.add_argument("--request_timestamp", type=int, default=None,
                      help="unix seconds of the request; the history is the behaviors "
                           "strictly before it (default: one second after the user's last "
                           "row)")
  parser.add_argument("--max_len", type=int, default=None,
                      help="keep only the most recent N behaviors (default: all; the model "
                           "keeps its own L most recent)")
  parser.add_argument("--output", default="-", help="where to write the JSON (- = stdout)")
  return parser


def _open_log(path: str):
  if path == "-":
    return sys.stdin.buffer
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    candidates = parse_candidates(args.candidates)
  except ValueError as e:
    parser.error(str(e))
  try:
    with _open_log(args.log) as f:
      events = user_events(f, args.user_id)
    if not len(events):
      raise ValueError(f"--log={args.log} has no row of --user_id={args.user_id}")
    request = request_from_events(events, candidates, args.request_timestamp, args.max_len)
  except (OSError, ValueError) as e:  # LogRowError, InputValidationError are ValueErrors
    print(f"error: --log={args.log}: {e}" if isinstance(e, LogRowError) else f"error: {e}",
          file=sys.stderr)
    return 2
  text = json.dumps(request)
  if args.output == "-":
    print(text)
  else:
    with open(args.output, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  print(f"{len(request[F.HIST_ITEM_ID])} behaviors of user {args.user_id} before "
        f"{request[F.REQUEST_TIMESTAMP]}, {len(candidates)} candidates", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
