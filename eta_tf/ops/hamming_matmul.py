"""Weighted Hamming top-k through one float32 matrix product (stock MatMul, no XLA).

Shapes: B users, N candidates, L behaviors, W int64 words per signature, k kept.

For ±1 sign vectors s, t of the bits of two signatures and word weights w (per bit),

    sum_i w_i [s_i != t_i] = S/2 - sum_i (w_i / 2) s_i t_i,      S = sum_i w_i,

so one matrix product of the candidates' weighted signs [N, 64W + 2] with the behaviors'
signs [64W + 2, L] gives every (candidate, behavior) distance. Two extra columns fold in
the order key of eta_tf.ops.hamming (distance · L' + recency rank, unique, ties to the
more recent behavior) and padding:

    query row    [-(L'/2) w_i s_i ...,  L',                 1   ]
    history row  [ t_i ...,             S/2 (pad: D + 1),   rank]   (pad: t = 0)

gives key = L' · distance + rank, padding L' · (D + 1) + rank (D = the largest distance):
unique, above every real key. Every term and partial sum is a multiple of 1/2 below
(D + 2) · L', so float32 holds them exactly while (D + 2) · L' <= 2^24 (L' <= 3970 for
category_first at m = 64). Longer histories take the distance alone from the product
(query row scaled by 1 instead of L', no rank column: multiples of 1/2 below D + 2) and
form distance · L' + rank in int32.

Selection: NthElement over the unique keys (hamming._k_smallest_positions), directly over
[N, L'] or blockwise (b-behavior blocks, laid out [b, nb] so the block minimum is a
reduction over a middle axis): the k blocks with the smallest minimum key contain the k
nearest (hamming's module docstring), and their keys are gathered from the product, not
re-scored. Results equal hamming.hamming_top_k's bit for bit.
"""
import numpy as np
import tensorflow as tf

from eta_tf.ops import bits as bits_ops
from eta_tf.ops import hamming

FLOAT_EXACT = 2 ** 24


# Row v: the ±1 signs of byte v's 8 bits, least significant first (bit 1 -> +1).
_BYTE_SIGNS = (((np.arange(256)[:, None] >> np.arange(8)) & 1) * 2 - 1).astype(np.float32)


def _signs(signatures: tf.Tensor) -> tf.Tensor:
  """int64 [..., W] -> float32 ±1 [..., 64W], bit i of word w at 64w + i (bit 1 -> +1).

  The words' bytes (Bitcast, little-endian: byte j holds bits 8j..8j+7) index a 256-row
  sign table: one gather instead of shifts, masks and casts over every bit.
  """
  words = signatures.shape[-1]
  as_bytes = tf.bitcast(tf.convert_to_tensor(signatures, tf.int64), tf.uint8)  # [..., W, 8]
  signs = tf.gather(tf.constant(_BYTE_SIGNS), tf.cast(as_bytes, tf.int32))  # [..., W, 8, 8]
  return tf.reshape(signs, tf.concat([tf.shape(signatures)[:-1],
                                      [words * bits_ops.WORD_BITS]], 0))


def bit_weights(words: int, word_weights=None) -> np.ndarray:
  """Per-bit weights float32 [64W] of W words (None: all 1)."""
  word_weights = word_weights or (1,) * words
  return np.repeat(np.asarray(word_weights, np.float32), bits_ops.WORD_BITS)


def folds_rank(padded_length: int, words: int, word_weights=None) -> bool:
  """True when the product can carry the whole order key exactly in float32."""
  largest = hamming.max_distance(words, word_weights)
  return (largest + 2) * padded_length <= FLOAT_EXACT


def matmul_keys(query_signatures, key_signatures, valid, padded_length: int,
                word_weights=None, columns=None):
  """Order keys [B, N, L'] of every (candidate, behavior) from one matrix product.

  Args:
    query_signatures: int64 [B, N, W]; key_signatures: int64 [B, L', W] (already padded
      to padded_length, static); valid: bool [B, L'].
    columns: None, or int32 [L'] the behavior position of each output column (a
      permutation, e.g. the [b, nb] block layout).
  Returns:
    float32 keys [B, N, L'] when folds_rank(...), else int32 keys; key = distance · L' +
    (L' - 1 - position), padding L' · (D + 1) + (L' - 1 - position), D = max_distance.
  """
  words = query_signatures.shape[-1]
  weights = bit_weights(words, word_weights)
  total = float(weights.sum())
  largest = hamming.max_distance(words, word_weights)
  length = padded_length
  fold = folds_rank(length, words, word_weights)
  keys = key_signatures
  if columns is not None:
    keys = tf.gather(keys, columns, axis=1)
    valid = tf.gather(valid, columns, axis=1)
    position = tf.cast(columns, tf.float32)
  else:
    position = tf.range(length, dtype=tf.float32)
  rank = (length - 1) - position  # [L']
  valid_f = tf.cast(valid, tf.float32)[..., None]  # [B, L', 1]
  history = _signs(keys) * valid_f
  base = valid_f * (total / 2) + (1.0 - valid_f) * float(largest + 1)
  batch = tf.shape(history)[0]
  extra = [base]
  if fold:
    extra.append(tf.tile(rank[None, :, None], [batch, 1, 1]))
  history = tf.concat([history] + extra, axis=-1)  # [B, L', 64W + 1|2]
  scale = float(length) if fold else 1.0
  query = _signs(query_signatures) * tf.constant(-(scale / 2) * weights)
  ones = tf.ones_like(query[..., :1])
  query = tf.concat([query, ones * scale] + ([ones] if fold else []), axis=-1)
  product = tf.linalg.matmul(query, history, transpose_b=True)  # [B, N, L']
  if fold:
    return product
  return tf.cast(product, tf.int32) * length + tf.cast(rank, tf.int32)


def _decode(keys, padded_length: int, largest: int):
  """Keys (float32 or int32) -> (indices, distances, mask), masked slots 0 / 0 / False."""
  keys = tf.cast(keys, tf.int32)
  distances = tf.math.floordiv(keys, padded_length)
  mask = distances <= largest
  indices = padded_length - 1 - tf.math.floormod(keys, padded_length)
  zeros = tf.zeros_like(keys)
  return tf.where(mask, indices, zeros), tf.where(mask, distances, zeros), mask


def _prepare(query_signatures, key_signatures, valid, word_weights):
  """Tensors and static facts of the product path: query, keys, valid, word_weights."""
  query = tf.convert_to_tensor(query_signatures, tf.int64)
  keys = tf.convert_to_tensor(key_signatures, tf.int64)
  words, length = query.shape[-1], keys.shape[1]
  if words is None or length is None:
    raise ValueError(f"matmul_top_k needs static W and L, got W={words}, L={length}")
  word_weights = hamming._check_weights(word_weights, words)  # pylint: disable=protected-access
  if valid is None:
    valid = tf.ones(tf.shape(keys)[:2], tf.bool)
  return query, keys, tf.convert_to_tensor(valid, tf.bool), word_weights


def product_keys(query_signatures, key_signatures, valid, k: int, block_size: int = 0,
                 word_weights=None):
  """The distance pass of matmul_top_k: (order keys [B, N, L'], L', number of blocks).

  L' = max(L, k), or nb · b with nb = max(ceil(L / b), k) blocks; with blocks the
  columns are laid out [b, nb] (column r · nb + j: behavior j · b + r).
  """
  query, keys, valid, word_weights = _prepare(query_signatures, key_signatures, valid,
                                              word_weights)
  length = keys.shape[1]
  b = int(block_size) if block_size and block_size > 1 else 0
  num_blocks = max(-(-length // b), k) if b else 0
  padded = num_blocks * b if b else max(length, k)
  if padded != length:
    keys = tf.pad(keys, [[0, 0], [0, padded - length], [0, 0]])
    valid = tf.pad(valid, [[0, 0], [0, padded - length]])
  columns = None
  if b:
    columns = tf.constant(
        np.arange(padded, dtype=np.int32).reshape(num_blocks, b).T.reshape(-1))
  return matmul_keys(query, keys, valid, padded, word_weights, columns), padded, num_blocks


def matmul_top_k(query_signatures, key_signatures, valid=None, k: int = 48,
                 block_size: int = 0, sort: bool = True, word_weights=None):
  """hamming.hamming_top_k through a float32 matrix product (module docstring).

  Args:
    query_signatures: int64 [B, N, W] (W static); key_signatures: int64 [B, L, W]
      (L static); valid: bool [B, L] (default all real); k: behaviors kept.
    block_size: 0 = one selection over all L; b > 1 = blocks of b behaviors.
    sort: nearest first, ties to the more recent; False: the same k, unspecified order
      (not hamming_top_k's).
    word_weights: None or W static ints >= 1 (hamming_distance's).
  Returns:
    indices int32 [B, N, k], distances int32 [B, N, k], mask bool [B, N, k] (0 / 0 /
    False where masked): equal to hamming.hamming_top_k's (sorted), the same k (unsorted).
  """
  order, padded, num_blocks = product_keys(query_signatures, key_signatures, valid, k,
                                           block_size, word_weights)
  words = tf.convert_to_tensor(query_signatures, tf.int64).shape[-1]
  largest = hamming.max_distance(words, hamming._check_weights(word_weights, words))  # pylint: disable=protected-access
  shape = tf.shape(order)
  if num_blocks:
    b = padded // num_blocks
    blocks = tf.reshape(order, [shape[0], shape[1], b, num_blocks])
    best = hamming._k_smallest_positions(tf.reduce_min(blocks, axis=2), k)  # pylint: disable=protected-access
    chosen = tf.gather(blocks, best, axis=3, batch_dims=2)  # [B, N, b, k]
    # Keys are unique and carry their position: the layout of the b·k candidates does
    # not matter to the selection (no transpose to hamming_top_k's block-major order;
    # unsorted, the same k come out in another order).
    order = tf.reshape(chosen, [shape[0], shape[1], b * k])
  chosen = hamming._k_smallest(order, k, sort)  # pylint: disable=protected-access
  return _decode(chosen, padded, largest)


# The product pays for its sign unpacking and N x L buffer only over many candidates and
# long histories (bench/hamming_kernels.py --category_first, bench/hamming_matmul_ab.py);
# below, hamming_top_k.
MIN_MATMUL_LENGTH = 512
MIN_MATMUL_CANDIDATES = 64


def product_block_size(length, n, k: int, use_xla: bool = False):
  """The product path's block size (0: one selection over L) for static L and N, or None
  when weighted_top_k takes hamming_top_k (use_xla, L or N below the thresholds, unknown
  L). n = None (unknown N): the block size for N >= MIN_MATMUL_CANDIDATES."""
  if use_xla or length is None or length < MIN_MATMUL_LENGTH:
    return None
  if n is not None and n < MIN_MATMUL_CANDIDATES:
    return None
  b = hamming.default_block_size(length)
  return b if length >= 2 * k * b else 0


def weighted_top_k(query_signatures, key_signatures, valid, k: int, sort: bool = True,
                   word_weights=None, use_xla: bool = False):
  """Exact weighted Hamming top-k by size: the product path (blockwise, b by L) for
  >= MIN_MATMUL_CANDIDATES candidates over a static L >= MIN_MATMUL_LENGTH, else
  hamming.hamming_top_k (also whenever use_xla). Same result either way, bit for bit.

  Shapes and arguments as hamming.hamming_top_k (valid bool [B, L] required).
  """
  query = tf.convert_to_tensor(query_signatures, tf.int64)
  keys = tf.convert_to_tensor(key_signatures, tf.int64)
  fallback = lambda: hamming.hamming_top_k(query, keys, valid, k, use_xla=use_xla,  # noqa: E731
                                           sort=sort, word_weights=word_weights)
  b = product_block_size(keys.shape[1], None, k, use_xla)
  if query.shape[-1] is None or b is None:
    return fallback()
  product = lambda: matmul_top_k(query, keys, valid, k, block_size=b, sort=sort,  # noqa: E731
                                 word_weights=word_weights)
  n = query.shape[1]
  if n is not None:
    return product() if n >= MIN_MATMUL_CANDIDATES else fallback()
  return tf.cond(tf.shape(query)[1] >= MIN_MATMUL_CANDIDATES, product, fallback)
