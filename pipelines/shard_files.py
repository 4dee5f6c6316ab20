"""Intermediate files of the user-sharded job (pipelines.sharded): names, pickled
TFRecords of Python values, and the user -> shard hash.
"""
import pickle
import uuid
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
import numpy as np

SUFFIX = ".tfrecord"


def shard_name(work_dir: str, kind: str, shard: int) -> str:
  """File prefix of one shard of one kind of intermediate file."""
  return FileSystems.join(work_dir, f"{kind}-s{shard:05d}")


def all_shards(work_dir: str, kind: str) -> str:
  """Glob of every shard of one kind."""
  return FileSystems.join(work_dir, f"{kind}-s*")


def shard_of_user(user_id: int, num_shards: int) -> int:
  """User shard of a user id (its raw lines, its sequence and its drawn negatives)."""
  return zlib.crc32(str(user_id).encode()) % num_shards


def has_files(pattern: str) -> bool:
  return any(r.metadata_list for r in FileSystems.match([pattern]))


def has_records(pattern: str) -> bool:
  """Whether any file matching `pattern` is non-empty (an empty partition still writes a
  file of 0 bytes)."""
  return any(m.size_in_bytes for r in FileSystems.match([pattern]) for m in r.metadata_list)


class _ConcatenateRowsByKey(beam.DoFn):
  """(key, int64 rows [m, k]) -> (key, the rows of many elements concatenated), per bundle.

  A user's block per shard is a few rows; written, read and unpickled one by one, their
  count (users x shards) -- not the rows -- set the sharded job's time, which then grew
  faster than the log. Pending rows are flushed, every key at once, when they reach
  `max_pending_rows` (memory bounded however many keys) and at the end of the bundle.
  Rows are never split or reordered within an element, so a consumer that needs one
  element's rows together (a target's draws) still gets them together.
  """

  def __init__(self, max_pending_rows: int):
    super().__init__()
    self._max_pending_rows = max_pending_rows
    self._pending, self._rows = {}, 0

  def start_bundle(self):
    self._pending, self._rows = {}, 0

  def _flush(self):
    pending, self._pending, self._rows = self._pending, {}, 0
    return [(key, np.concatenate(blocks)) for key, blocks in pending.items()]

  def process(self, kv):
    key, rows = kv
    if not len(rows):
      return
    self._pending.setdefault(key, []).append(rows)
    self._rows += len(rows)
    if self._rows >= self._max_pending_rows:
      yield from self._flush()

  def finish_bundle(self):
    for kv in self._flush():
      yield WindowedValue(kv, MIN_TIMESTAMP, [GlobalWindow()])


class ConcatenateRowsByKey(beam.PTransform):
  """(key, int64 rows) -> (key, concatenated rows): fewer, larger elements (see
  _ConcatenateRowsByKey). Keys must be hashable; the rows of a key keep no order."""

  def __init__(self, max_pending_rows: int = 1 << 20):
    super().__init__()
    self._max_pending_rows = max_pending_rows

  def expand(self, pairs):
    return pairs | "Concatenate" >> beam.ParDo(_ConcatenateRowsByKey(self._max_pending_rows))


class _WriteRowsByKey(_ConcatenateRowsByKey):
  """_ConcatenateRowsByKey's batches, each written to its own file `prefix_of(key)`-<uuid>
  .pickle (temporary name, then renamed) instead of emitted; yields nothing."""

  def __init__(self, prefix_of, max_pending_rows: int):
    super().__init__(max_pending_rows)
    self._prefix_of = prefix_of

  def _flush(self):
    for key, rows in super()._flush():
      path = f"{self._prefix_of(key)}-{uuid.uuid4().hex}{BATCH_SUFFIX}"
      write_pickle_file(path + ".tmp", (key, rows))
      FileSystems.rename([path + ".tmp"], [path])
    return []


BATCH_SUFFIX = ".pickle"


class WriteBatchesByKey(beam.PTransform):
  """(key, int64 rows) -> files `prefix_of(key)`-<uuid>.pickle of concatenated rows, in one
  transform for any number of keys.

  A Partition into one TFRecord sink per key costs each pipeline runner stages per sink;
  with a sink per user shard in each of the per-shard pipelines that is quadratic in the
  shard count. Here a DoFn writes each key's batch to
  a file of its own. For the local sharded job: a retried bundle would leave its files
  (the local runner does not retry; distributed runners do not run this path).
  """

  def __init__(self, prefix_of, max_pending_rows: int = 1 << 20):
    super().__init__()
    self._prefix_of, self._max_pending_rows = prefix_of, max_pending_rows

  def expand(self, pairs):
    return pairs | "WriteBatches" >> beam.ParDo(
        _WriteRowsByKey(self._prefix_of, self._max_pending_rows))


def _batch_files(pattern: str):
  return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list
                if m.path.endswith(BATCH_SUFFIX))


class ReadBatches(beam.PTransform):
  """Pipeline -> the (key, rows) batches of WriteBatchesByKey's files matching `pattern`
  (none if no file matches), read one file at a time."""

  def __init__(self, pattern: str):
    super().__init__()
    self._pattern = pattern

  def expand(self, pipeline):
    return (pipeline | "Pattern" >> beam.Create([self._pattern])
            | "Files" >> beam.FlatMap(_batch_files)
            | "Read" >> beam.Map(read_pickle_file))


class WritePickled(beam.PTransform):
  """Any picklable values -> TFRecord files `prefix`-*.tfrecord."""

  def __init__(self, prefix: str):
    super().__init__()
    self._prefix = prefix

  def expand(self, values):
    return (values
            | "Pickle" >> beam.Map(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)
            | "Write" >> beam.io.WriteToTFRecord(self._prefix, file_name_suffix=SUFFIX))


class ReadPickled(beam.PTransform):
  """Pipeline -> the values of the files matching `pattern` (WritePickled's)."""

  def __init__(self, pattern: str):
    super().__init__()
    self._pattern = pattern

  def expand(self, pipeline):
    return (pipeline
            | "Read" >> beam.io.ReadFromTFRecord(self._pattern, coder=beam.coders.BytesCoder(),
                                                 validate=False)
            | "Unpickle" >> beam.Map(pickle.loads))


def write_pickle_file(path: str, value) -> None:
  with FileSystems.create(path) as f:
    f.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def read_pickle_file(path: str):
  with FileSystems.open(path) as f:
    return pickle.loads(f.read())


def read_pickled_or_nothing(pipeline, label: str, pattern: str):
  """ReadPickled(pattern), or an empty PCollection where no file matches."""
  return (pipeline | f"Read{label}" >> ReadPickled(pattern) if has_files(pattern)
          else pipeline | f"No{label}" >> beam.Create([]))
