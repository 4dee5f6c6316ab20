"""Embeddings of raw ids: in-graph hashing, behaviors = item ⊕ category ⊕ type ⊕ time gap."""
import math

import tensorflow as tf

from eta_tf import features as F
from eta_tf.config import ModelConfig
from eta_tf.ops import bits as bits_ops


def fit_history(ids: tf.Tensor, max_len: int) -> tf.Tensor:
  """Keeps the most recent `max_len` columns of a left-padded [B, T] history, left-pads to L.

  Longer histories are truncated to the most recent L behaviors (documented behaviour of
  both signatures); shorter ones are padded with 0 on the left.
  """
  ids = tf.convert_to_tensor(ids, tf.int64)
  length = tf.shape(ids)[1]
  start = tf.maximum(length - max_len, 0)
  ids = ids[:, start:]
  ids = tf.pad(ids, [[0, 0], [max_len - (length - start), 0]])
  return tf.ensure_shape(ids, [None, max_len])


def time_gap_bucket(target_timestamp: tf.Tensor, history_timestamp: tf.Tensor,
                    valid: tf.Tensor, num_buckets: int) -> tf.Tensor:
  """log2 bucket of the behavior -> target gap in minutes; 0 = padding.

  Args: target_timestamp int64 [B]; history_timestamp int64 [B, L]; valid bool [B, L].
    Or per (target, behavior) pair: [B, N], [B, 1, L] and [B, N, L].
  Returns: int64 [B, L] (or [B, N, L]) in [0, num_buckets).
  """
  gap_seconds = tf.maximum(target_timestamp[..., None] - history_timestamp, 0)
  minutes = tf.cast(gap_seconds, tf.float32) / 60.0
  bucket = 1 + tf.cast(tf.floor(tf.math.log1p(minutes) / math.log(2.0)), tf.int64)
  bucket = tf.clip_by_value(bucket, 1, num_buckets - 1)
  return tf.where(valid, bucket, tf.zeros_like(bucket))


class FeatureEmbedding(tf.keras.layers.Layer):
  """Embedding tables shared by every block of the model.

  items(ids) [...] -> [..., item_dim]; categories(ids) -> [..., category_dim];
  candidates(item, category) -> [..., item_dim + category_dim];
  behaviors(history, target_timestamp) -> dict of behavior embeddings [B, L, Db],
  item embeddings [B, L, item_dim], category buckets [B, L], valid mask [B, L].
  """

  def __init__(self, config: ModelConfig, **kwargs):
    super().__init__(**kwargs)
    self.config = config
    c = config
    self.item_embedding = tf.keras.layers.Embedding(c.item_buckets, c.item_dim,
                                                    name="item_embedding")
    self.category_embedding = tf.keras.layers.Embedding(
        c.category_buckets, c.category_dim, name="category_embedding")
    self.behavior_type_embedding = tf.keras.layers.Embedding(
        F.NUM_BEHAVIOR_TYPES, c.behavior_type_dim, name="behavior_type_embedding")
    self.time_gap_embedding = tf.keras.layers.Embedding(
        c.time_buckets, c.time_dim, name="time_gap_embedding")

  def build(self, input_shape=None):
    for layer in (self.item_embedding, self.category_embedding,
                  self.behavior_type_embedding, self.time_gap_embedding):
      layer.build([None])
    super().build(input_shape)

  def item_buckets(self, ids):
    return bits_ops.hash_ids(ids, self.config.item_buckets)

  def category_buckets(self, ids):
    return bits_ops.hash_ids(ids, self.config.category_buckets)

  def items(self, ids):
    return self.item_embedding(self.item_buckets(ids))

  def categories(self, ids):
    return self.category_embedding(self.category_buckets(ids))

  def candidates(self, item_ids, category_ids):
    return tf.concat([self.items(item_ids), self.categories(category_ids)], axis=-1)

  def behaviors(self, history: dict, target_timestamp: tf.Tensor) -> dict:
    item_ids = history[F.HIST_ITEM_ID]
    valid = item_ids > 0
    item_bucket = self.item_buckets(item_ids)
    category_bucket = self.category_buckets(history[F.HIST_CATEGORY_ID])
    item = self.item_embedding(item_bucket)
    behavior_type = tf.clip_by_value(history[F.HIST_BEHAVIOR_TYPE], 0,
                                     F.NUM_BEHAVIOR_TYPES - 1)
    behavior_type = tf.where(valid, behavior_type, tf.zeros_like(behavior_type))
    gap = time_gap_bucket(target_timestamp, history[F.HIST_TIMESTAMP], valid,
                          self.config.time_buckets)
    behavior = tf.concat([
        item,
        self.category_embedding(category_bucket),
        self.behavior_type_embedding(behavior_type),
        self.time_gap_embedding(gap),
    ], axis=-1)
    return {"behavior": behavior, "item": item, "item_bucket": item_bucket,
            "category_bucket": category_bucket, "valid": valid}
