"""tf.data reader: user-sequence TFRecords (pipelines.build_dataset) -> model samples.

Each record holds one user's time-sorted behaviors once plus the user's labelled targets
(features.py). `make_dataset` parses a record once and expands every target into a sample:
the most recent `max_len` behaviors with a timestamp strictly before the target's,
left-padded with 0 so the most recent behavior sits at index max_len - 1.

Expansion is vectorised per record: `tf.searchsorted` on the history timestamps gives each
target's prefix end e, and one gather of `[zeros(L), history][e : e + L]` yields the
left-padded window. Targets are expanded in chunks of TARGET_CHUNK so a heavy user with
thousands of targets never materialises a [T, L] block at once.
"""
import json
from typing import Dict, List, Optional, Sequence

import numpy as np

from eta_tf import features
import tensorflow as tf  # after eta_tf: the tf-keras environment guard runs first

# Buffer sizes of the two shuffles: records (users) first, so that a batch mixes users,
# then samples, so that one user's targets are spread out.
RECORD_SHUFFLE_BUFFER = 256
SAMPLE_SHUFFLE_BUFFER = 4096
# Expanded samples weigh 4 x 8 x L bytes (128 KiB at L = 4096), so the sample buffer is
# also capped by bytes: min(SAMPLE_SHUFFLE_BUFFER, SAMPLE_SHUFFLE_BYTES / sample bytes).
SAMPLE_SHUFFLE_BYTES = 64 << 20
# Targets of one record expanded at once (bounds memory to TARGET_CHUNK x max_len).
TARGET_CHUNK = 64
FILE_CYCLE_LENGTH = 4


def read_schema(data_dir: str) -> dict:
  """Reads and checks `<data_dir>/schema.json` written by pipelines.build_dataset.

  Raises:
    ValueError naming the path when the file is missing, not JSON, of another schema
    version, or describes other record features than eta_tf.features.
  """
  path = f"{data_dir.rstrip('/')}/{features.SCHEMA_FILE}"
  if not tf.io.gfile.exists(path):
    raise ValueError(f"{path} not found: {data_dir} is not a pipelines.build_dataset "
                     f"output directory (run python -m pipelines.build_dataset first)")
  try:
    with tf.io.gfile.GFile(path) as f:
      schema = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e
  version = schema.get("schema_version") if isinstance(schema, dict) else None
  if version != features.SCHEMA_VERSION:
    raise ValueError(f"{path} has schema_version {version!r}, this code reads version "
                     f"{features.SCHEMA_VERSION}; rebuild the dataset with this version")
  names = [f.get("name") for f in schema.get("record_features", [])]
  expected = [f.name for f in features.RECORD_FEATURES]
  if names != expected:
    raise ValueError(f"{path} describes record features {names}, expected {expected}")
  return schema


def record_files(data_dir_or_pattern: str, split: str) -> List[str]:
  """Sorted record files of `split`: a pipeline output dir (schema checked) or a glob.

  A glob may contain "{split}", which is replaced by the split name.
  """
  if tf.io.gfile.isdir(data_dir_or_pattern):
    read_schema(data_dir_or_pattern)
    pattern = features.split_file_pattern(data_dir_or_pattern, split)
  else:
    pattern = data_dir_or_pattern.replace("{split}", split)
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise ValueError(f"no record files match {pattern} (split {split!r})")
  return files


def parse_record(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  """One serialised user-sequence record -> dict of int64 tensors (lists are 1-D)."""
  return tf.io.parse_single_example(serialized, features.record_parse_spec())


def _target_chunks(record: Dict[str, tf.Tensor]) -> tf.data.Dataset:
  """Record -> dataset of (record with targets restricted to one chunk) elements."""
  num_targets = tf.size(record[features.TARGET_TIMESTAMPS], out_type=tf.int64)
  history = {name: record[name] for name in features.HISTORY_FEATURES}
  targets = {name: record[name] for name in features.TARGET_FEATURES}

  def chunk(start):
    end = tf.minimum(start + TARGET_CHUNK, num_targets)
    out = {name: value[start:end] for name, value in targets.items()}
    out.update(history)
    out[features.USER_ID] = record[features.USER_ID]
    return out

  return tf.data.Dataset.range(0, num_targets, TARGET_CHUNK).map(chunk)


def _expand_chunk(chunk: Dict[str, tf.Tensor], max_len: int, include_user_id: bool):
  """Record chunk -> ({sample feature: [c, ...]}, label [c]) for its c targets."""
  target_ts = chunk[features.TARGET_TIMESTAMPS]
  # Number of behaviors strictly before each target ('left': equal times are excluded).
  ends = tf.searchsorted(chunk[features.HIST_TIMESTAMP], target_ts, side="left")
  window = ends[:, None] + tf.range(max_len)[None, :]  # into [zeros(L), history]
  out = {}
  for name in features.HISTORY_FEATURES:
    padded = tf.concat([tf.zeros([max_len], tf.int64), chunk[name]], axis=0)
    out[name] = tf.gather(padded, window)
  out[features.TARGET_ITEM_ID] = chunk[features.TARGET_ITEM_IDS]
  out[features.TARGET_CATEGORY_ID] = chunk[features.TARGET_CATEGORY_IDS]
  out[features.TARGET_TIMESTAMP] = target_ts
  if include_user_id:
    out[features.USER_ID] = tf.fill(tf.shape(target_ts), chunk[features.USER_ID])
  label = tf.cast(chunk[features.TARGET_LABELS], tf.float32)
  return out, label


def _records(data_dir_or_pattern, split, shuffle, seed, repeat, num_parallel_calls):
  """Parsed user-sequence records of a split: files and records shuffled if asked."""
  files = record_files(data_dir_or_pattern, split)
  ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed)
  ds = ds.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
      cycle_length=min(FILE_CYCLE_LENGTH, len(files)), num_parallel_calls=num_parallel_calls,
      deterministic=True)
  if shuffle:
    ds = ds.shuffle(RECORD_SHUFFLE_BUFFER, seed=seed)
  if repeat:
    ds = ds.repeat()
  return ds.map(parse_record, num_parallel_calls=num_parallel_calls, deterministic=True)


def sample_shuffle_buffer(max_len: int) -> int:
  sample_bytes = len(features.HISTORY_FEATURES) * 8 * max_len
  return int(max(1, min(SAMPLE_SHUFFLE_BUFFER, SAMPLE_SHUFFLE_BYTES // sample_bytes)))


def make_dataset(data_dir_or_pattern: str,
                 split: str,
                 max_len: int,
                 batch_size: int,
                 shuffle: bool = True,
                 seed: int = 0,
                 repeat: bool = False,
                 include_user_id: bool = True,
                 drop_remainder: bool = False,
                 num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
  """Batched (features, label) samples of one split.

  Args:
    data_dir_or_pattern: a pipelines.build_dataset output dir (its schema.json is checked)
      or a glob of GZIP TFRecord files ("{split}" in it is replaced by `split`).
    split: features.TRAIN_SPLIT or features.EVAL_SPLIT.
    max_len: L, history length of a sample.
    batch_size: samples per batch.
    shuffle: shuffle files, records (users) and samples with seeded buffers.
    seed: shuffle seed; equal seeds give equal order.
    repeat: repeat indefinitely (reshuffled each pass).
    include_user_id: add features.USER_ID to the features.
    drop_remainder: drop a last partial batch (static batch dimension).
    num_parallel_calls: parallelism of parsing/expansion (order stays deterministic).

  Returns:
    tf.data.Dataset of (features_dict, label): features.sample_features(max_len) keys
    (HIST_* int64 [B, L] left-padded, TARGET_* int64 [B]) plus USER_ID int64 [B] when
    include_user_id; label float32 [B].
  """
  if max_len < 1 or batch_size < 1:
    raise ValueError(f"max_len ({max_len}) and batch_size ({batch_size}) must be >= 1")
  ds = _records(data_dir_or_pattern, split, shuffle, seed, repeat, num_parallel_calls)
  ds = ds.flat_map(_target_chunks)
  ds = ds.map(lambda chunk: _expand_chunk(chunk, max_len, include_user_id),
              num_parallel_calls=num_parallel_calls, deterministic=True)
  ds = ds.unbatch()
  if shuffle:
    ds = ds.shuffle(sample_shuffle_buffer(max_len), seed=seed + 1)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return ds.prefetch(tf.data.AUTOTUNE)


# --- user-batched reading -------------------------------------------------------------
# Targets of one user per batch row (chunk); a batch holds batch_size // this many rows.
TARGETS_PER_CHUNK = 32
# Chunks in the shuffle buffer: a chunk weighs about 4 x 8 x (L + its span) bytes.
CHUNK_SHUFFLE_BUFFER = 1024


def user_batch_shape(batch_size: int, targets_per_chunk: int = TARGETS_PER_CHUNK):
  """(chunks per batch, targets per chunk) of a user-batched batch of `batch_size`
  targets: at most batch_size targets, chunks of min(targets_per_chunk, batch_size)."""
  chunk = max(1, min(targets_per_chunk, batch_size))
  return max(1, batch_size // chunk), chunk


def _user_chunks(record: Dict[str, tf.Tensor], max_len: int, targets_per_chunk: int,
                 include_user_id: bool) -> tf.data.Dataset:
  """Record -> dataset of chunks: up to `targets_per_chunk` of the user's targets
  (consecutive in time) with the history slice their causal windows cover.

  Chunk features: HIST_* [w] (the behaviors from the first target's window start to the
  last target's prefix end), TARGET_ITEM_ID / TARGET_CATEGORY_ID / TARGET_TIMESTAMP [c],
  TARGET_HISTORY_END [c] (behaviors of the slice strictly before the target: its window is
  the last max_len of them), TARGET_WEIGHT [c] ones; label float32 [c].
  """
  order = tf.argsort(record[features.TARGET_TIMESTAMPS], stable=True)
  targets = {name: tf.gather(record[name], order) for name in features.TARGET_FEATURES}
  ends = tf.searchsorted(record[features.HIST_TIMESTAMP],
                         targets[features.TARGET_TIMESTAMPS], side="left",
                         out_type=tf.int64)
  num_targets = tf.size(order, out_type=tf.int64)

  def chunk(start):
    stop = tf.minimum(start + targets_per_chunk, num_targets)
    end = ends[start:stop]  # non-decreasing: targets are sorted by time
    first = tf.maximum(end[0] - max_len, 0)
    out = {name: record[name][first:end[-1]] for name in features.HISTORY_FEATURES}
    out[features.TARGET_ITEM_ID] = targets[features.TARGET_ITEM_IDS][start:stop]
    out[features.TARGET_CATEGORY_ID] = targets[features.TARGET_CATEGORY_IDS][start:stop]
    out[features.TARGET_TIMESTAMP] = targets[features.TARGET_TIMESTAMPS][start:stop]
    out[features.TARGET_HISTORY_END] = end - first
    out[features.TARGET_WEIGHT] = tf.ones([stop - start], tf.float32)
    if include_user_id:
      out[features.USER_ID] = record[features.USER_ID]
    return out, tf.cast(targets[features.TARGET_LABELS][start:stop], tf.float32)

  return tf.data.Dataset.range(0, num_targets, targets_per_chunk).map(chunk)


def make_user_dataset(data_dir_or_pattern: str,
                      split: str,
                      max_len: int,
                      batch_size: int,
                      shuffle: bool = True,
                      seed: int = 0,
                      repeat: bool = False,
                      include_user_id: bool = True,
                      drop_remainder: bool = False,
                      targets_per_chunk: int = TARGETS_PER_CHUNK,
                      num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
  """User-batched (features, label) batches of one split: the input of the user-batched
  training path (CtrModel.call on TARGET_HISTORY_END features).

  A batch holds batch_size // c chunks (rows), c = min(targets_per_chunk, batch_size)
  (user_batch_shape); a chunk is up to c of one user's targets, consecutive in time, with
  the slice of the user's history their windows cover, stored once. So a batch has at most
  batch_size real targets (fewer when users have fewer targets than a chunk's worth); every target sees
  exactly the per-sample path's history (make_dataset): the last `max_len` behaviors
  strictly before its time. Arguments as in make_dataset.

  Returns:
    tf.data.Dataset of (features, label): HIST_* int64 [G, W] (each row's slice, right-
    padded with 0 to the batch's longest), TARGET_ITEM_ID / TARGET_CATEGORY_ID /
    TARGET_TIMESTAMP / TARGET_HISTORY_END int64 [G, C], TARGET_WEIGHT float32 [G, C]
    (0 = padding target), USER_ID int64 [G] when include_user_id; label float32 [G, C].
  """
  if max_len < 1 or batch_size < 1 or targets_per_chunk < 1:
    raise ValueError(f"max_len ({max_len}), batch_size ({batch_size}) and "
                     f"targets_per_chunk ({targets_per_chunk}) must be >= 1")
  chunks, targets_per_chunk = user_batch_shape(batch_size, targets_per_chunk)
  ds = _records(data_dir_or_pattern, split, shuffle, seed, repeat, num_parallel_calls)
  ds = ds.flat_map(lambda record: _user_chunks(record, max_len, targets_per_chunk,
                                               include_user_id))
  if shuffle:
    ds = ds.shuffle(CHUNK_SHUFFLE_BUFFER, seed=seed + 1)
  ds = ds.padded_batch(chunks, drop_remainder=drop_remainder)
  return ds.prefetch(tf.data.AUTOTUNE)


def count_samples(data_dir: str, split: str, targets_per_chunk: Optional[int] = None) -> int:
  """Number of samples (= labelled targets) of a split; reads only the target labels.

  With `targets_per_chunk`: the number of make_user_dataset rows (chunks) instead, the sum
  over users of ceil(targets / targets_per_chunk); a user-batched epoch has
  chunks // (batch_size // targets_per_chunk) full batches.
  """
  spec = {features.TARGET_LABELS: tf.io.RaggedFeature(tf.int64)}
  ds = tf.data.TFRecordDataset(record_files(data_dir, split), compression_type="GZIP")
  ds = ds.map(lambda s: tf.size(tf.io.parse_single_example(s, spec)[features.TARGET_LABELS],
                                out_type=tf.int64), num_parallel_calls=tf.data.AUTOTUNE)
  if targets_per_chunk:
    ds = ds.map(lambda n: (n + targets_per_chunk - 1) // targets_per_chunk)
  return int(ds.reduce(tf.constant(0, tf.int64), lambda total, n: total + n))


def read_records(data_dir_or_pattern: str, split: str) -> List[Dict[str, np.ndarray]]:
  """All records of a split as dicts of numpy arrays, in file order (tests, debugging)."""
  ds = tf.data.TFRecordDataset(record_files(data_dir_or_pattern, split),
                               compression_type="GZIP").map(parse_record)
  return [{k: v.numpy() for k, v in record.items()} for record in ds]


def reference_samples(records: Sequence[Dict[str, np.ndarray]], max_len: int,
                      include_user_id: bool = True):
  """Plain numpy reference of the expansion, for tests: list of (features, label).

  Deliberately written differently from make_dataset (a filter on timestamps instead of
  searchsorted + gather) so the two check each other.
  """
  samples = []
  for record in records:
    hist_ts = np.asarray(record[features.HIST_TIMESTAMP])
    for j, target_ts in enumerate(record[features.TARGET_TIMESTAMPS]):
      before = np.flatnonzero(hist_ts < target_ts)[-max_len:] if max_len else []
      sample = {}
      for name in features.HISTORY_FEATURES:
        window = np.zeros(max_len, np.int64)
        values = np.asarray(record[name])[before]
        if len(values):
          window[max_len - len(values):] = values
        sample[name] = window
      sample[features.TARGET_ITEM_ID] = int(record[features.TARGET_ITEM_IDS][j])
      sample[features.TARGET_CATEGORY_ID] = int(record[features.TARGET_CATEGORY_IDS][j])
      sample[features.TARGET_TIMESTAMP] = int(target_ts)
      if include_user_id:
        sample[features.USER_ID] = int(np.asarray(record[features.USER_ID]).reshape(-1)[0])
      samples.append((sample, float(record[features.TARGET_LABELS][j])))
  return samples


def unbatch_numpy(dataset: tf.data.Dataset, limit: Optional[int] = None):
  """(features, label) batches -> list of per-sample (numpy features, float label)."""
  samples = []
  for batch_features, labels in dataset:
    batch_features = {k: v.numpy() for k, v in batch_features.items()}
    for i, label in enumerate(labels.numpy()):
      samples.append(({k: (v[i] if v.ndim > 1 else int(v[i]))
                       for k, v in batch_features.items()}, float(label)))
      if limit is not None and len(samples) >= limit:
        return samples
  return samples
