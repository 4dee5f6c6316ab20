"""The in-pipeline user sequence and its tf.train.Example encoding (features.RECORD_FEATURES).

A `UserSequence` is one user's deduplicated, time-sorted behaviors plus labelled targets,
kept as two small int64 matrices so per-user work is vectorised numpy, not Python loops.
"""
from typing import NamedTuple, Optional

import numpy as np

from eta_tf import features
from pipelines.parsing import CATEGORY_ID, ITEM_ID, KIND, TIMESTAMP

# Column order of `UserSequence.history` / `.targets` (same as the parsed event tuples).
COLUMNS = (TIMESTAMP, ITEM_ID, CATEGORY_ID, KIND)
_HISTORY_NAMES = {
    features.HIST_TIMESTAMP: TIMESTAMP,
    features.HIST_ITEM_ID: ITEM_ID,
    features.HIST_CATEGORY_ID: CATEGORY_ID,
    features.HIST_BEHAVIOR_TYPE: KIND,
}
_TARGET_NAMES = {
    features.TARGET_TIMESTAMPS: TIMESTAMP,
    features.TARGET_ITEM_IDS: ITEM_ID,
    features.TARGET_CATEGORY_IDS: CATEGORY_ID,
    features.TARGET_LABELS: KIND,
}


class UserSequence(NamedTuple):
  """One user's data inside the pipeline.

  Attributes:
    user_id: raw user id.
    history: int64 [E, 4] rows (timestamp, item_id, category_id, behavior_type), sorted,
      exact duplicates removed.
    targets: int64 [T, 4] rows (timestamp, item_id, category_id, label), sorted by time.
    eval_start: this user's own split start (--split=user_last), None = the global one.
  """
  user_id: int
  history: np.ndarray
  targets: np.ndarray
  eval_start: Optional[int] = None


def empty_events() -> np.ndarray:
  return np.zeros((0, len(COLUMNS)), np.int64)


def sort_unique(events) -> (np.ndarray, int):
  """Rows sorted by (timestamp, item, category, kind) with exact duplicates removed.

  Returns (unique rows int64 [N, 4], number of duplicates removed).
  """
  rows = np.asarray(events, dtype=np.int64).reshape(-1, len(COLUMNS))
  if len(rows) < 2:
    return rows, 0
  order = np.lexsort(rows.T[::-1])  # last key is primary -> reverse: timestamp first
  rows = rows[order]
  keep = np.empty(len(rows), bool)
  keep[0] = True
  np.any(rows[1:] != rows[:-1], axis=1, out=keep[1:])
  return rows[keep], int(len(rows) - keep.sum())


def aggregate_rows(keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Distinct key rows [K, k] with their summed weights appended [K, k + 1], sorted.

  A lexsort and a boundary scan, not np.unique(axis=0): that one sorts a void-typed copy
  and keeps several full copies alive, which would be the peak memory of the pipeline's
  global tables on big logs.
  """
  keys = np.asarray(keys, np.int64)
  if not len(keys):
    return np.zeros((0, keys.shape[1] + 1), np.int64)
  order = np.lexsort(keys.T[::-1])  # first column primary
  out_keys = keys[order]
  starts = np.ones(len(out_keys), bool)
  starts[1:] = (out_keys[1:] != out_keys[:-1]).any(axis=1)
  starts = np.flatnonzero(starts)
  summed = np.add.reduceat(np.asarray(weights)[order], starts).astype(np.int64)
  return np.concatenate([out_keys[starts], summed[:, None]], axis=1)


def unique_rows(keys: np.ndarray) -> np.ndarray:
  """Distinct rows of int64 keys [K, k], sorted (aggregate_rows without the weights)."""
  keys = np.asarray(keys, np.int64)
  return aggregate_rows(keys, np.zeros(len(keys), np.int64))[:, :keys.shape[1]]


def prior_counts(sequence: UserSequence) -> np.ndarray:
  """For each target, how many behaviors happened strictly before its timestamp."""
  return np.searchsorted(sequence.history[:, TIMESTAMP], sequence.targets[:, TIMESTAMP],
                         side="left")


_VARINT_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)
_VARINT_COLUMNS = np.arange(10)


def _varints(values: np.ndarray):
  """Protobuf base-128 varints of int64 values, vectorised.

  Returns (concatenated bytes, byte size of each value). Negative values take 10 bytes
  (two's complement), as protobuf encodes int64.
  """
  v = np.asarray(values, np.int64).astype(np.uint64)
  groups = (v[:, None] >> _VARINT_SHIFTS) & np.uint64(0x7F)  # [N, 10] 7-bit groups
  sizes = 1 + ((v[:, None] >> _VARINT_SHIFTS[1:]) > 0).sum(axis=1)
  more = _VARINT_COLUMNS < (sizes - 1)[:, None]  # continuation bit but on the last byte
  encoded = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
  return encoded[_VARINT_COLUMNS < sizes[:, None]].tobytes(), sizes


def _varint(value: int) -> bytes:
  """One non-negative varint (field headers and lengths)."""
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
  """Protobuf field of wire type 2 (bytes / sub-message / packed repeated)."""
  return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload


def encode_example(sequence: UserSequence) -> bytes:
  """Serialises a UserSequence as a tf.train.Example with features.RECORD_FEATURES keys.

  Hand-rolled protobuf encoding, byte-identical to
  `tf.train.Example.SerializeToString(deterministic=True)` (tested against it): equal
  sequences give equal bytes, and Beam workers do not need to import TensorFlow (seconds
  per worker process). All values are varint-encoded in one vectorised pass.
  """
  columns = {features.USER_ID: np.asarray([sequence.user_id], np.int64)}
  for name, column in _HISTORY_NAMES.items():
    columns[name] = sequence.history[:, column]
  for name, column in _TARGET_NAMES.items():
    columns[name] = sequence.targets[:, column]
  names = sorted(columns)  # deterministic protobuf serialisation sorts map keys
  payload, sizes = _varints(np.concatenate([columns[n] for n in names]))
  byte_ends = [0] + np.cumsum(sizes).tolist()  # byte_ends[k] = end of the k-th value
  value_ends = np.cumsum([len(columns[n]) for n in names]).tolist()
  entries, start = [], 0
  for name, value_end in zip(names, value_ends):
    end = byte_ends[value_end]
    # map entry {1: key, 2: Feature{3: Int64List{1: packed varints}}}; an empty list is
    # an empty Int64List message.
    int64_list = _length_delimited(1, payload[start:end]) if end > start else b""
    entry = (_length_delimited(1, name.encode()) +
             _length_delimited(2, _length_delimited(3, int64_list)))
    entries.append(_length_delimited(1, entry))
    start = end
  return _length_delimited(1, b"".join(entries))


def encode_example_with_protobuf(sequence: UserSequence) -> bytes:
  """Reference encoder through TensorFlow's generated protobuf classes (tests only)."""
  # TensorFlow's protos only here (tests): Beam workers encode without loading TensorFlow.
  from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top
  example = example_pb2.Example()
  feature = example.features.feature
  feature[features.USER_ID].int64_list.value.append(int(sequence.user_id))
  for name, column in _HISTORY_NAMES.items():
    feature[name].int64_list.value.extend(sequence.history[:, column].tolist())
  for name, column in _TARGET_NAMES.items():
    feature[name].int64_list.value.extend(sequence.targets[:, column].tolist())
  return example.SerializeToString(deterministic=True)


def decode_example(serialized: bytes) -> UserSequence:
  """Inverse of encode_example (tests, debugging); checks every record feature is there."""
  # TensorFlow's protos only here (tests): Beam workers encode without loading TensorFlow.
  from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top
  example = example_pb2.Example.FromString(serialized)
  feature = example.features.feature
  missing = [f.name for f in features.RECORD_FEATURES if f.name not in feature]
  if missing:
    raise ValueError(f"record lacks features {missing}")

  def matrix(names):
    columns = [None] * len(COLUMNS)
    for name, column in names.items():
      columns[column] = np.asarray(feature[name].int64_list.value, np.int64)
    return np.stack(columns, axis=1) if len(columns[0]) else empty_events()

  return UserSequence(int(feature[features.USER_ID].int64_list.value[0]),
                      matrix(_HISTORY_NAMES), matrix(_TARGET_NAMES))
