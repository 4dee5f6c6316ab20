"""Target-aware statistics of the long history, computed in-graph (standard ops only).

What a count knows, handed to the tower explicitly instead of being left for softmax
attention to rediscover (softmax keeps the direction of interest and drops its intensity:
three exact revisits and one look alike after normalisation). For each candidate and each
of its item and its category, over the sample's long history (the last L behaviors):

  count     log1p(matches) / log1p(L)
  any       1 if there is a match
  time      closeness in time of the last match: 1 - log1p(minutes since it) / 20,
            clipped to [0, 1]; 0 without a match (20 ~ log1p of 900 years in minutes)
  position  closeness in the sequence of the last match:
            1 - log1p(behaviors after it) / log1p(L); 0 without a match

plus the history's fill, log1p(real behaviors) / log1p(L), and the category's share of
them. NUM_TARGET_STATS = 10 features, all in [0, 1]. Ids are compared raw (int64), so a
hash-bucket collision never counts as a match, and the result only depends on the ids and
timestamps: training and the exported graph compute the same values.

`target_stats_reference` is the numpy definition the tests check the graph against.
"""
import numpy as np
import tensorflow as tf

NUM_TARGET_STATS = 10
_LOG_MINUTES_SCALE = 20.0


def _match_stats(match, behaviors_after, gap_minutes, log_length):
  """count, any, time, position of one field. match bool [B, N, L]; others [B, 1 or N, L]."""
  matchf = tf.cast(match, tf.float32)
  count = tf.reduce_sum(matchf, axis=-1)
  has = tf.cast(count > 0, tf.float32)
  big = tf.constant(3.0e38, tf.float32)
  last_after = tf.reduce_min(tf.where(match, behaviors_after, big), axis=-1)
  last_gap = tf.reduce_min(tf.where(match, gap_minutes, big), axis=-1)
  # Without a match the min is `big`; has == 0 zeroes those features (no inf * 0).
  last_after = tf.where(count > 0, last_after, tf.zeros_like(last_after))
  last_gap = tf.where(count > 0, last_gap, tf.zeros_like(last_gap))
  time_close = has * tf.clip_by_value(1.0 - tf.math.log1p(last_gap) / _LOG_MINUTES_SCALE,
                                      0.0, 1.0)
  position_close = has * (1.0 - tf.math.log1p(last_after) / log_length)
  return [tf.math.log1p(count) / log_length, has, time_close, position_close]


def _sorted_match_stats(ids, valid, timestamps, target_timestamp, candidates, log_length):
  """_match_stats of one field for N candidates sharing their user's history, from one
  sort of the history instead of N x L comparisons.

  ids int64 [B, L] (padded by the caller to L >= 1), valid bool [B, L], timestamps int64
  [B, L], target_timestamp int64 [B], candidates int64 [B, N]. The history's ids are
  sorted per user and cut into runs of equal ids (segments); per segment, the valid
  behaviors' count, largest position and largest timestamp (segment sum / max); each
  candidate finds its run by binary search. The nearest match in the sequence is the
  largest position, the nearest in time the largest timestamp (the gap max(t - ts, 0) does
  not increase with ts), so the values equal the N x L path's exactly.
  """
  batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
  order = tf.argsort(ids, axis=-1)
  sorted_ids = tf.gather(ids, order, batch_dims=1)
  starts = tf.cast(tf.not_equal(sorted_ids[:, 1:], sorted_ids[:, :-1]), tf.int32)
  run = tf.cumsum(tf.concat([tf.zeros([batch, 1], tf.int32), starts], axis=1), axis=1)
  segment = tf.reshape(run + (tf.range(batch) * length)[:, None], [-1])  # global ids
  segments = batch * length
  valid_sorted = tf.gather(valid, order, batch_dims=1)
  count = tf.math.unsorted_segment_sum(
      tf.reshape(tf.cast(valid_sorted, tf.float32), [-1]), segment, segments)
  last_position = tf.math.unsorted_segment_max(
      tf.reshape(tf.where(valid_sorted, order, -1), [-1]), segment, segments)
  lowest = tf.constant(np.iinfo(np.int64).min, tf.int64)
  last_time = tf.math.unsorted_segment_max(
      tf.reshape(tf.where(valid_sorted, tf.gather(timestamps, order, batch_dims=1), lowest),
                 [-1]), segment, segments)
  first = tf.searchsorted(sorted_ids, candidates, side="left")  # [B, N] in [0, L]
  first = tf.minimum(first, length - 1)
  found = tf.equal(tf.gather(sorted_ids, first, batch_dims=1), candidates)
  own = tf.gather(run, first, batch_dims=1) + (tf.range(batch) * length)[:, None]
  count = tf.where(found, tf.gather(count, own), 0.0)
  has = tf.cast(count > 0, tf.float32)
  # behaviors after the last match (the N x L path's L - 1 - position; L excludes the
  # caller's padding column) and minutes since it; 0 without a match.
  last_after = tf.cast(length - 2 - tf.gather(last_position, own), tf.float32)
  gap_seconds = tf.maximum(target_timestamp[:, None] - tf.gather(last_time, own), 0)
  last_gap = tf.cast(gap_seconds, tf.float32) / 60.0
  last_after = tf.where(count > 0, last_after, tf.zeros_like(last_after))
  last_gap = tf.where(count > 0, last_gap, tf.zeros_like(last_gap))
  time_close = has * tf.clip_by_value(1.0 - tf.math.log1p(last_gap) / _LOG_MINUTES_SCALE,
                                      0.0, 1.0)
  position_close = has * (1.0 - tf.math.log1p(last_after) / log_length)
  return [tf.math.log1p(count) / log_length, has, time_close, position_close], count


# From this many candidates per user (or an unknown number: serving), one sort of the
# history is cheaper than N x L comparisons per field.
MIN_SORTED_CANDIDATES = 8


def _sorted_target_stats(history_items, history_categories, history_timestamps, valid,
                         candidate_items, candidate_categories, target_timestamp,
                         log_length):
  """target_stats of candidates sharing their user's history (the serving layout)."""
  pad = lambda x, value: tf.pad(x, [[0, 0], [0, 1]], constant_values=value)  # noqa: E731
  # One padding column: L >= 1 for the binary search, also for an empty history.
  valid = pad(valid, False)
  timestamps = pad(history_timestamps, 0)
  item_parts, _ = _sorted_match_stats(pad(history_items, 0), valid, timestamps,
                                      target_timestamp, candidate_items, log_length)
  category_parts, category_count = _sorted_match_stats(
      pad(history_categories, 0), valid, timestamps, target_timestamp,
      candidate_categories, log_length)
  real = tf.reduce_sum(tf.cast(valid, tf.float32), axis=-1, keepdims=True)  # [B, 1]
  fill = tf.math.log1p(real) / log_length + tf.zeros_like(category_count)
  share = tf.math.divide_no_nan(category_count, real)
  return tf.stack(item_parts + category_parts + [fill, share], axis=-1)


def target_stats(history_items, history_categories, history_timestamps, valid,
                 candidate_items, candidate_categories, target_timestamp,
                 behaviors_after=None, length=None):
  """The statistics of N candidates per user.

  Args:
    history_items, history_categories, history_timestamps: int64 [B, L], oldest first.
    valid: bool [B, L] (False = padding), or per candidate [B, N, L] (the user-batched
      path: each target's own causal window inside a shared history).
    candidate_items, candidate_categories: int64 [B, N].
    target_timestamp: int64 [B], or per candidate [B, N].
    behaviors_after: float32 [B, N, L], behaviors between each behavior and the end of the
      candidate's window (default: L - 1 - position, the left-padded sample layout).
    length: the L of the log1p(L) scales (default: the history width).
  Returns:
    float32 [B, N, NUM_TARGET_STATS]. Many candidates per user (N >= MIN_SORTED_CANDIDATES
    or unknown, one history per user): from one sort of each field's history
    (_sorted_match_stats), else from N x L comparisons; the same values either way.
  """
  valid = tf.convert_to_tensor(valid, tf.bool)
  target_timestamp = tf.convert_to_tensor(target_timestamp, tf.int64)
  if length is None:
    length = history_items.shape[1] or tf.shape(history_items)[1]
  log_length = tf.math.log1p(tf.cast(length, tf.float32))
  num_candidates = candidate_items.shape[1]
  if (valid.shape.rank == 2 and target_timestamp.shape.rank == 1 and
      behaviors_after is None and
      (num_candidates is None or num_candidates >= MIN_SORTED_CANDIDATES)):
    return _sorted_target_stats(history_items, history_categories, history_timestamps,
                                valid, candidate_items, candidate_categories,
                                target_timestamp, log_length)
  valid3 = valid[:, None, :] if valid.shape.rank == 2 else valid
  item_match = tf.equal(candidate_items[:, :, None], history_items[:, None, :]) & valid3
  category_match = (tf.equal(candidate_categories[:, :, None],
                             history_categories[:, None, :]) & valid3)
  if behaviors_after is None:
    # Behaviors after position i: L - 1 - i (histories are left-padded, oldest first).
    positions = tf.range(tf.shape(history_items)[1])
    behaviors_after = tf.cast(tf.shape(history_items)[1] - 1 - positions, tf.float32)
    behaviors_after = behaviors_after[None, None, :]
  if target_timestamp.shape.rank == 1:
    gap_seconds = tf.maximum(target_timestamp[:, None] - history_timestamps, 0)[:, None, :]
  else:
    gap_seconds = tf.maximum(target_timestamp[:, :, None] - history_timestamps[:, None, :],
                             0)
  gap_minutes = tf.cast(gap_seconds, tf.float32) / 60.0
  real = tf.reduce_sum(tf.cast(valid3, tf.float32), axis=-1)  # [B, 1] or [B, N]
  category_count = tf.reduce_sum(tf.cast(category_match, tf.float32), axis=-1)
  fill = tf.math.log1p(real) / log_length + tf.zeros_like(category_count)
  share = tf.math.divide_no_nan(category_count, real)
  parts = (_match_stats(item_match, behaviors_after, gap_minutes, log_length) +
           _match_stats(category_match, behaviors_after, gap_minutes, log_length) +
           [fill, share])
  return tf.stack(parts, axis=-1)


def target_stats_reference(history_items, history_categories, history_timestamps,
                           candidate_items, candidate_categories, target_timestamp):
  """Numpy, one (user, candidate) at a time: the definition in the module docstring.

  Args: numpy int arrays [B, L] (0 item id = padding), [B, N], [B, N], [B].
  Returns: float64 [B, N, NUM_TARGET_STATS].
  """
  batch, length = np.asarray(history_items).shape
  num = np.asarray(candidate_items).shape[1]
  out = np.zeros((batch, num, NUM_TARGET_STATS))
  log_length = np.log1p(length)
  for b in range(batch):
    real = [i for i in range(length) if history_items[b][i] > 0]
    for n in range(num):
      row = []
      for ids, candidate in ((history_items, candidate_items[b][n]),
                             (history_categories, candidate_categories[b][n])):
        hits = [i for i in real if ids[b][i] == candidate]
        if not hits:
          row += [0.0, 0.0, 0.0, 0.0]
          continue
        last = max(hits)
        minutes = max(int(target_timestamp[b]) - int(history_timestamps[b][last]), 0) / 60
        row += [np.log1p(len(hits)) / log_length, 1.0,
                float(np.clip(1 - np.log1p(minutes) / _LOG_MINUTES_SCALE, 0, 1)),
                1 - np.log1p(length - 1 - last) / log_length]
      category_hits = sum(1 for i in real if history_categories[b][i] ==
                          candidate_categories[b][n])
      row += [np.log1p(len(real)) / log_length,
              category_hits / len(real) if real else 0.0]
      out[b, n] = row
  return out
