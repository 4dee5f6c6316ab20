"""Bit packing and in-graph id hashing, with standard TF ops only."""
import numpy as np
import tensorflow as tf

WORD_BITS = 64


def num_words(num_bits: int) -> int:
  return (num_bits + WORD_BITS - 1) // WORD_BITS


def _bit_weights() -> np.ndarray:
  # 2^0 .. 2^62 and, for bit 63, -2^63: the int64 two's-complement value of that bit, so a
  # sum of distinct weights is the packed word without overflow.
  w = np.array([1 << j for j in range(WORD_BITS - 1)] + [-(1 << 63)], dtype=np.int64)
  return w


def pack_bits(bits: tf.Tensor) -> tf.Tensor:
  """Packs a bool/0-1 tensor [..., m] into int64 words [..., ceil(m/64)].

  Bit i goes to word i // 64, bit position i % 64 (LSB first).
  """
  bits = tf.convert_to_tensor(bits)
  m = bits.shape[-1]
  if m is None:
    raise ValueError("pack_bits needs a static number of bits")
  words = num_words(m)
  b = tf.cast(bits, tf.int64)
  pad = words * WORD_BITS - m
  if pad:
    b = tf.concat([b, tf.zeros(tf.concat([tf.shape(b)[:-1], [pad]], 0), tf.int64)], -1)
  b = tf.reshape(b, tf.concat([tf.shape(b)[:-1], [words, WORD_BITS]], 0))
  return tf.reduce_sum(b * tf.constant(_bit_weights()), axis=-1)


def unpack_bits(words: tf.Tensor, num_bits: int) -> tf.Tensor:
  """Inverse of pack_bits: int64 [..., W] -> bool [..., num_bits]."""
  words = tf.convert_to_tensor(words, tf.int64)
  shifts = tf.range(WORD_BITS, dtype=tf.int64)
  b = tf.bitwise.bitwise_and(tf.bitwise.right_shift(words[..., None], shifts), 1)
  b = tf.reshape(b, tf.concat([tf.shape(words)[:-1], [-1]], 0))
  return tf.cast(b[..., :num_bits], tf.bool)


def hash_ids(ids: tf.Tensor, num_buckets: int) -> tf.Tensor:
  """Maps raw int64 ids to [0, num_buckets): 0 stays padding, ids > 0 go to 1..buckets-1.

  Pure arithmetic (no string ops, no vocabulary), so ids never seen in training still get
  a bucket and training and serving agree by construction. Ids <= 0 are padding.
  """
  ids = tf.convert_to_tensor(ids, tf.int64)
  bucket = tf.math.floormod(ids - 1, num_buckets - 1) + 1
  return tf.where(ids > 0, bucket, tf.zeros_like(bucket))
