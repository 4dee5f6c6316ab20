"""Intermediate files of the user-sharded job (pipelines.sharded): names, pickled
TFRecords of Python values, and the user -> shard hash.
"""
import pickle
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

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
