"""Hamming distances between packed signatures and exact nearest-k selection.

Shapes: B = batch (users), N = candidates per user, L = history length, W = int64 words per
signature, k = behaviors kept.
"""
import tensorflow as tf


def hamming_distance(query_signatures: tf.Tensor, key_signatures: tf.Tensor) -> tf.Tensor:
  """popcount(query XOR key) summed over words.

  Args:
    query_signatures: int64 [B, N, W].
    key_signatures: int64 [B, L, W].
  Returns:
    int32 [B, N, L].
  """
  x = tf.bitwise.bitwise_xor(query_signatures[:, :, None, :], key_signatures[:, None, :, :])
  counts = tf.raw_ops.PopulationCount(x=x)  # uint8 [B, N, L, W]
  if counts.shape[-1] == 1:
    return tf.cast(counts[..., 0], tf.int32)
  return tf.reduce_sum(tf.cast(counts, tf.int32), axis=-1)


def select_nearest(distances: tf.Tensor, valid: tf.Tensor, k: int):
  """The k smallest distances per (user, candidate); ties go to the more recent behavior.

  Histories are oldest first, so "more recent" means a larger index. Invalid (padding)
  positions are never selected before a valid one; when fewer than k are valid the extra
  slots are masked. Works for L < k and L = 0.

  Args:
    distances: int32 [B, N, L], each in [0, 2^20).
    valid: bool [B, L].
    k: int, number to keep.
  Returns:
    indices int32 [B, N, k] (0 where masked), distances int32 [B, N, k] (as given;
    0 where masked), mask bool [B, N, k]; sorted nearest first.
  """
  distances = tf.convert_to_tensor(distances, tf.int32)
  length = tf.shape(distances)[-1]
  padded_length = tf.maximum(length, k)
  pad = padded_length - length
  distances = tf.pad(distances, [[0, 0], [0, 0], [0, pad]])
  valid = tf.pad(tf.cast(valid, tf.bool), [[0, 0], [0, pad]])
  position = tf.range(padded_length, dtype=tf.int32)
  # Unique order key: distance first, then recency (larger index = more recent = smaller
  # key). Invalid positions get the largest keys.
  order_key = distances * padded_length + (padded_length - 1 - position)
  invalid_key = tf.int32.max
  order_key = tf.where(valid[:, None, :], order_key, invalid_key)
  _, indices = tf.math.top_k(-order_key, k=k, sorted=True)
  mask = tf.gather(tf.broadcast_to(valid[:, None, :], tf.shape(order_key)), indices,
                   batch_dims=2)
  selected = tf.gather(distances, indices, batch_dims=2)
  zeros = tf.zeros_like(indices)
  return (tf.where(mask, indices, zeros), tf.where(mask, selected, zeros), mask)
