"""The pieces of ETA's long-history block timed alone, on the production shapes.

kernel_fn: the Hamming top-k (eta_tf.ops.hamming.hamming_top_k as ETA calls it, or the
naive one-TopKV2 formulation of bench/hamming_kernels.py); attention_fns: din_long's
attention over all L behaviors and ETA's over its k gathered ones. Each returns callables
for bench.interleaved_timing (B = 1 user, N candidates, history L).
"""
import eta_tf  # noqa: F401  (tf-keras env before TensorFlow)
import numpy as np
import tensorflow as tf

from eta_tf.config import ModelConfig
from eta_tf.models.long_history import make_attention
from eta_tf.ops import hamming


def kernel_fn(length: int, n: int, use_xla: bool, naive: bool = False, sort: bool = False,
              category_first: bool = False, floor: bool = False):
  """hamming_top_k alone on the production shapes (B = 1, static L, k = 48): item-only
  signatures (W = 1), or with category_first the default eta's item ‖ category words
  ranked category first (W = 2, category words from 300 distinct categories).

  sort=False is how ETA calls it (attention does not depend on the order of the k).
  naive=True: the original formulation (bench/hamming_kernels.py `naive`, one TopKV2 over
  L) as a same-run reference. floor=True: XOR + popcount of the N x L pairs alone (W = 1,
  no selection): what any stock-op formulation pays at least.
  """
  rng = np.random.default_rng(length + n)
  lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
  words = 2 if category_first else 1
  query = rng.integers(lo, hi, (1, n, words), dtype=np.int64, endpoint=True)
  keys = rng.integers(lo, hi, (1, length, words), dtype=np.int64, endpoint=True)
  if category_first:
    pool = rng.integers(lo, hi, 300, dtype=np.int64, endpoint=True)
    keys[..., 1] = pool[rng.integers(0, 300, (1, length))]
    query[..., 1] = pool[rng.integers(0, 300, (1, n))]
  query, keys = tf.constant(query), tf.constant(keys)
  valid = tf.ones((1, length), tf.bool)
  spec = [tf.TensorSpec([1, None, words], tf.int64),
          tf.TensorSpec([1, length, words], tf.int64), tf.TensorSpec([1, length], tf.bool)]
  weights = (1, 65) if category_first else None
  if floor:
    fn = tf.function(lambda q, k, v: tf.raw_ops.PopulationCount(
        x=tf.bitwise.bitwise_xor(q[:, :, 0, None], k[:, None, :, 0]))[:, :1, :1],
                     input_signature=spec)
  elif naive:
    # Only for the naive-kernel records: the other runs need none of hamming_kernels.
    from bench.hamming_kernels import naive as naive_kernel  # pylint: disable=g-import-not-at-top
    fn = tf.function(naive_kernel, input_signature=spec)
  else:
    fn = tf.function(lambda q, k, v: hamming.hamming_top_k(q, k, v, 48, use_xla=use_xla,
                                                           sort=sort, word_weights=weights),
                     input_signature=spec)
  return lambda: [t.numpy() for t in fn(query, keys, valid)]


def attention_fns(length: int, n: int):
  """din_long's attention over all L, and ETA's over k gathered behaviors (default config).

  The same TargetAttention layer the models use, weights random; B = 1, N candidates.
  """
  config = ModelConfig(model="eta", max_len=length)
  attention = make_attention(config, "attention")
  rng = np.random.default_rng(length * 7 + n)
  query = tf.constant(rng.normal(size=(1, n, attention.query_dim)), tf.float32)
  behavior = tf.constant(rng.normal(size=(1, length, attention.key_dim)), tf.float32)
  valid = tf.ones((1, length), tf.bool)
  k = config.top_k
  indices = tf.constant(np.stack([rng.choice(length, k, replace=False)
                                  for _ in range(n)])[None], tf.int32)
  mask = tf.ones((1, n, k), tf.bool)
  dims = attention.query_dim, attention.key_dim

  @tf.function(input_signature=[tf.TensorSpec([1, None, dims[0]], tf.float32),
                                tf.TensorSpec([1, length, dims[1]], tf.float32),
                                tf.TensorSpec([1, length], tf.bool)])
  def full(q, b, v):
    return attention(q, b, v)

  @tf.function(input_signature=[tf.TensorSpec([1, None, dims[0]], tf.float32),
                                tf.TensorSpec([1, length, dims[1]], tf.float32),
                                tf.TensorSpec([1, None, k], tf.int32),
                                tf.TensorSpec([1, None, k], tf.bool)])
  def top_k(q, b, i, m):
    key_heads, value_heads = attention.project_gathered_keys(b, i)
    return attention.attend(attention.project_query(q), key_heads, value_heads, m)

  return {"attention_full": lambda: full(query, behavior, valid).numpy(),
          "attention_topk": lambda: top_k(query, behavior, indices, mask).numpy()}
