"""Hamming distances between packed signatures and exact nearest-k selection.

Shapes: B = batch (users), N = candidates per user, L = history length, W = int64 words per
signature, k = behaviors kept. Standard TF ops only (BitwiseXor, PopulationCount, TopKV2,
GatherV2, ...), so a stock TF Serving loads every graph built here.

Order: nearest first; among equal distances the more recent behavior (larger index, histories
are oldest first) comes first. Every selection below uses the unique order key

    key = distance * L' + (L' - 1 - position)        (L' >= L, int32)

so "the k smallest keys" is exactly the documented result, ties included.

Padding is never chosen before a real behavior: its keys are (INT32_MAX - L') + rank,
above every real key and still unique.

Selection (`_k_smallest_positions`): NthElement (std::nth_element per row, O(n)) gives the
k-th smallest unique key, `keys <= it` marks exactly k positions, tf.where lists them; a
tf.sort of those k orders them. Cheaper than TopKV2, whose heap pays for every improvement
of the running top-k (bench/hamming_kernels.py measures both).

`hamming_top_k` is the fast fused path:

1. Blocks. The history is cut into nb contiguous blocks of b behaviors. For every
   (candidate, block) only the block's minimum distance is kept: the N x L distances are
   never stored as int32 keys, only as uint8 [B, N, nb] slices (or never, under XLA).
   The block key (block min, -block index) is unique; the k smallest block keys contain
   every one of the k best behaviors: a behavior e of block X is beaten by the best
   behavior of every block whose key is smaller than X's (smaller min distance, or the same
   min distance in a more recent block), so if k blocks came before X, k behaviors would
   beat e. The k*b behaviors of the k chosen blocks are re-scored exactly (XOR + popcount
   on gathered signatures) and the k nearest of them selected and sorted.
2. Padding without a pass over N x L. An invalid behavior takes the signature of the first
   valid behavior of its block (same distance as a real one, so the block minimum is the
   minimum over real behaviors); blocks without any real behavior get keys above all
   others. Exact validity is applied to the k*b re-scored behaviors.
3. The block minimum is b elementwise minima of [B, N, nb] slices (layout [W, b, nb] of the
   per-user signatures), not a reduction over a short inner axis of a [B, N, L] tensor.
4. Optional XLA (`use_xla=True`): the distance + block-minimum pass and the re-scoring run
   jit-compiled (XOR, popcount and minimum fused, no N x L buffer at all); the selection
   stays outside XLA (XLA's CPU TopK/sort is far slower). A stock TF Serving runs it only
   with --xla_cpu_compilation_enabled=true. N is padded to bucket sizes (<= 25% extra) so
   serving compiles a bounded number of shapes.
"""
import math

import tensorflow as tf

INT32_MAX = 2 ** 31 - 1
# Block size by history length (bench/hamming_kernels.py, N = 1000, W = 1).
_BLOCK_SIZES = ((2048, 4), (8192, 8), (None, 16))
# Below this many behaviors the blockwise path cannot beat one selection over all of them.
_MIN_BLOCKWISE_LENGTH = 256
# hamming_top_k's per-user preparation (B x L work) pays off only over enough candidates
# per user: with N = 1 (training) the direct path is faster, with hundreds of candidates
# the blockwise one (bench/hamming_kernels.py).
_MIN_BLOCKWISE_CANDIDATES = 32


def default_block_size(length) -> int:
  """Block size b for a history of `length` behaviors (None: unknown length)."""
  if length is None:
    return 8
  for limit, size in _BLOCK_SIZES:
    if limit is None or length <= limit:
      return size
  raise AssertionError("unreachable")


def _resolve_block_size(static_length, k: int, block_size) -> int:
  """The block size to use; 0 means one selection over the whole history.

  None picks by length and falls back to 0 for short histories (where blocks cannot
  pay); an explicit size > 1 is always used (tests force every path this way).
  """
  if block_size is not None:
    return int(block_size) if block_size > 1 else 0
  size = default_block_size(static_length)
  if static_length is not None and static_length < max(_MIN_BLOCKWISE_LENGTH,
                                                         2 * k * size):
    return 0
  return size


def _check_weights(word_weights, words):
  """word_weights as a tuple of W positive ints (None: all 1)."""
  if word_weights is None:
    return None
  word_weights = tuple(int(w) for w in word_weights)
  if words is None or len(word_weights) != words or min(word_weights) < 1:
    raise ValueError(f"word_weights={word_weights}: need one int >= 1 per signature word "
                     f"(W={words}, static)")
  return word_weights


def max_distance(words: int, word_weights=None) -> int:
  """The largest (weighted) distance of W-word signatures: 64 · sum of the weights."""
  return 64 * (sum(word_weights) if word_weights is not None else words)


def hamming_distance(query_signatures: tf.Tensor, key_signatures: tf.Tensor,
                     word_weights=None) -> tf.Tensor:
  """popcount(query XOR key) summed over words, word w counted word_weights[w] times.

  Args:
    query_signatures: int64 [B, N, W].
    key_signatures: int64 [B, L, W].
    word_weights: None (all 1) or W static ints >= 1: e.g. item ‖ category signatures
      ranked category first weigh the category words m + 1 (ETA's category_first).
  Returns:
    int32 [B, N, L].
  """
  query = tf.convert_to_tensor(query_signatures, tf.int64)
  keys = tf.convert_to_tensor(key_signatures, tf.int64)
  words = query.shape[-1]
  if words is None and word_weights is None:
    x = tf.bitwise.bitwise_xor(query[:, :, None, :], keys[:, None, :, :])
    return tf.reduce_sum(tf.cast(tf.raw_ops.PopulationCount(x=x), tf.int32), axis=-1)
  word_weights = _check_weights(word_weights, words) or (1,) * words
  # One [B, N, L] XOR per word: no [B, N, L, W] intermediate.
  total = None
  for w, weight in enumerate(word_weights):
    x = tf.bitwise.bitwise_xor(query[:, :, w, None], keys[:, None, :, w])
    count = tf.cast(tf.raw_ops.PopulationCount(x=x), tf.int32)
    count = count * weight if weight != 1 else count
    total = count if total is None else total + count
  return total


# ------------------------------------------------------------------ selection primitives
def _order_keys(distances, valid, position, padded_length):
  """Unique int32 order keys: distance * L' + (L' - 1 - position); padding above all.

  Padding gets (INT32_MAX - L') + (L' - 1 - position): still unique, larger than every
  real key (real keys < INT32_MAX - L' by the documented distance bound).
  """
  rank = padded_length - 1 - position
  return tf.where(valid, distances * padded_length + rank,
                  (INT32_MAX - padded_length) + rank)


def _decode(keys: tf.Tensor, padded_length):
  """Sorted order keys -> (indices, distances, mask), masked slots 0 / 0 / False."""
  mask = keys < INT32_MAX - padded_length
  indices = padded_length - 1 - tf.math.floormod(keys, padded_length)
  distances = tf.math.floordiv(keys, padded_length)
  zeros = tf.zeros_like(keys)
  return tf.where(mask, indices, zeros), tf.where(mask, distances, zeros), mask


def _k_smallest_positions(keys: tf.Tensor, k: int) -> tf.Tensor:
  """Positions int32 [B, N, k] (ascending) of the k smallest unique keys [B, N, n >= k].

  NthElement (std::nth_element, O(n) per row) finds the k-th smallest key; `keys <= it`
  then holds for exactly k positions per row, which tf.where lists row-major. Cheaper
  than TopKV2, whose heap pays for every improvement of the running top-k.
  """
  threshold = tf.raw_ops.NthElement(input=keys, n=k - 1)
  coords = tf.where(keys <= threshold[..., None])
  shape = tf.shape(keys)
  return tf.reshape(tf.cast(coords[:, 2], tf.int32), [shape[0], shape[1], k])


def _k_smallest(keys: tf.Tensor, k: int, sort: bool = True) -> tf.Tensor:
  """The k smallest unique keys [B, N, n >= k]: ascending, or in input order if not sort."""
  chosen = tf.gather(keys, _k_smallest_positions(keys, k), batch_dims=2)
  return tf.sort(chosen, axis=-1) if sort else chosen


def select_nearest(distances: tf.Tensor, valid: tf.Tensor, k: int, block_size=None,
                   sort: bool = True):
  """The k smallest distances per (user, candidate); ties go to the more recent behavior.

  Histories are oldest first, so "more recent" means a larger index. Invalid (padding)
  positions are never selected before a valid one; when fewer than k are valid the extra
  slots are masked. Works for L < k and L = 0.

  Args:
    distances: int32 [B, N, L], each >= 0 with (max distance + 2) * max(L, k) < 2^31.
    valid: bool [B, L].
    k: int, number to keep.
    block_size: behaviors per block of the exact blockwise selection (None: by L, none
      for short histories); 0 disables it (one selection over all L).
    sort: order the k nearest first; False returns the same k in an unspecified (but
      deterministic) order, which saves a sort when order does not matter (attention).
  Returns:
    indices int32 [B, N, k] (0 where masked), distances int32 [B, N, k] (as given;
    0 where masked), mask bool [B, N, k]; sorted nearest first if `sort`.
  """
  distances = tf.convert_to_tensor(distances, tf.int32)
  block_size = _resolve_block_size(distances.shape[-1], k, block_size)
  length = tf.shape(distances)[-1]
  if block_size:
    num_blocks = tf.maximum((length + block_size - 1) // block_size, k)
    padded_length = num_blocks * block_size
  else:
    padded_length = tf.maximum(length, k)
  pad = padded_length - length
  distances = tf.pad(distances, [[0, 0], [0, 0], [0, pad]])
  valid = tf.pad(tf.cast(valid, tf.bool), [[0, 0], [0, pad]])
  position = tf.range(padded_length, dtype=tf.int32)
  order_key = _order_keys(distances, valid[:, None, :], position, padded_length)
  if not block_size:
    return _decode(_k_smallest(order_key, k, sort), padded_length)
  shape = tf.shape(order_key)
  blocks = tf.reshape(order_key, [shape[0], shape[1], num_blocks, block_size])
  # The smallest key of a block is unique, so ordering blocks by it is the exact rule.
  best_blocks = _k_smallest_positions(tf.reduce_min(blocks, axis=-1), k)
  candidates = tf.gather(blocks, best_blocks, batch_dims=2)  # [B, N, k, b]
  candidates = tf.reshape(candidates, [shape[0], shape[1], k * block_size])
  return _decode(_k_smallest(candidates, k, sort), padded_length)


# ------------------------------------------------------------------ fused Hamming top-k
def _block_keys(query, block_signatures, block_valid, word_weights=None):
  """Unique block keys int32 [B, N, nb]: (min distance in block) * nb + recency rank.

  Args:
    query: int64 [B, N, W].
    block_signatures: int64 [B, W, b, nb] (b static), invalid behaviors replaced.
    block_valid: bool [B, nb], False for blocks without any real behavior (their keys
      come after every real block's, still unique).
    word_weights: None or W static ints (hamming_distance's).
  """
  words = query.shape[-1]
  block = block_signatures.shape[2]
  num_blocks = tf.shape(block_signatures)[-1]
  weights = word_weights or (1,) * words
  # The narrowest type that holds the largest distance: uint8 up to 3 unweighted words
  # (<= 192), int16 up to 32767 (4 words, or category-first's 64·(m + 2) at m = 64).
  largest = max_distance(words, word_weights)
  dtype = tf.uint8 if largest <= 255 else tf.int16 if largest <= 32767 else tf.int32
  block_min = None
  # b separate [B, N, nb] passes: small intermediates, faster than one [B, N, b, nb]
  # broadcast followed by a reduction.
  for r in range(block):
    total = None
    for w, weight in enumerate(weights):
      x = tf.bitwise.bitwise_xor(query[:, :, w, None], block_signatures[:, None, w, r])
      count = tf.raw_ops.PopulationCount(x=x)  # uint8 [B, N, nb]
      if dtype != tf.uint8:
        count = tf.cast(count, dtype)
      if weight != 1:
        count = count * tf.constant(weight, dtype)
      total = count if total is None else total + count
    block_min = total if block_min is None else tf.minimum(block_min, total)
  rank = num_blocks - 1 - tf.range(num_blocks, dtype=tf.int32)
  keys = tf.cast(block_min, tf.int32) * num_blocks + rank
  return tf.where(block_valid[:, None, :], keys, (INT32_MAX - num_blocks) + rank)


def _rescore(query, block_signatures, block_base, best_blocks, padded_length,
             word_weights=None):
  """Exact order keys int32 [B, N, k*b] of every behavior in the chosen blocks.

  Args:
    query: int64 [B, N, W]; block_signatures: int64 [B, nb, b, W] (as given);
    block_base: int32 [B, nb, b], the order key without the distance term;
    best_blocks: int32 [B, N, k]; word_weights: None or W static ints.
  """
  words = query.shape[-1]
  chosen = tf.gather(block_signatures, best_blocks, batch_dims=1)  # [B, N, k, b, W]
  counts = tf.raw_ops.PopulationCount(
      x=tf.bitwise.bitwise_xor(query[:, :, None, None, :], chosen))
  if word_weights is not None:
    distances = tf.reduce_sum(tf.cast(counts, tf.int32) * tf.constant(word_weights, tf.int32),
                              axis=-1)
  elif words == 1:
    distances = tf.cast(counts[..., 0], tf.int32)
  else:
    distances = tf.reduce_sum(tf.cast(counts, tf.int32), axis=-1)
  base = tf.gather(block_base, best_blocks, batch_dims=1)  # [B, N, k, b]
  # Padding's base is already above every real key; its distance term must not move it.
  keys = tf.where(base >= INT32_MAX - padded_length, base,
                  distances * padded_length + base)
  shape = tf.shape(keys)
  return tf.reshape(keys, [shape[0], shape[1], shape[2] * shape[3]])


_block_keys_xla = tf.function(_block_keys, jit_compile=True, autograph=False)
_rescore_xla = tf.function(_rescore, jit_compile=True, autograph=False)


def bucket_size(n: tf.Tensor) -> tf.Tensor:
  """Smallest size >= n of the form m * 2^e with m in 4..8 (at most 25% padding)."""
  n = tf.maximum(n, 1)
  exponent = tf.maximum(
      tf.cast(tf.math.ceil(tf.math.log(tf.cast(n, tf.float32)) / math.log(2.0)), tf.int32)
      - 3, 0)
  step = tf.bitwise.left_shift(tf.ones([], tf.int32), exponent)
  return (n + step - 1) // step * step


def hamming_top_k(query_signatures, key_signatures, valid=None, k: int = 48,
                  block_size=None, use_xla: bool = False, sort: bool = True,
                  word_weights=None):
  """Exact Hamming top-k, fused: select_nearest(hamming_distance(q, keys), valid, k).

  Same result, bit for bit, as the two-step composition (see the module docstring for how
  it is computed without N x L int32 keys).

  Args:
    query_signatures: int64 [B, N, W] (W static).
    key_signatures: int64 [B, L, W].
    valid: bool [B, L] (default: all real).
    k: behaviors to keep.
    block_size: behaviors per block (None: by L, and blocks only for >= 32 candidates
      per user); 0 = no blocks (one selection over L); > 1 always blocks.
    use_xla: compile the distance + block-minimum pass and the re-scoring with XLA
      (TF Serving must then run with --xla_cpu_compilation_enabled=true).
    sort: nearest first (True) or the same k in an unspecified, deterministic order
      (False: no final sort; ETA's attention does not depend on the order).
    word_weights: None (all words count 1) or W static ints >= 1: the distance is
      hamming_distance's weighted sum (ETA's category_first: the category words weigh
      m + 1). Keys need (max_distance + 2) · max(L, k) < 2^31.
  Returns:
    indices int32 [B, N, k] (0 where masked), distances int32 [B, N, k] (0 where masked),
    mask bool [B, N, k]; if `sort`, nearest first, ties to the more recent behavior.
  """
  query = tf.convert_to_tensor(query_signatures, tf.int64)
  keys = tf.convert_to_tensor(key_signatures, tf.int64)
  words = query.shape[-1]
  word_weights = _check_weights(word_weights, words)
  if valid is None:
    valid = tf.ones(tf.shape(keys)[:2], tf.bool)
  valid = tf.convert_to_tensor(valid, tf.bool)
  b = _resolve_block_size(keys.shape[1], k, block_size)
  direct = lambda: select_nearest(hamming_distance(query, keys, word_weights), valid, k,  # noqa: E731
                                  block_size=0, sort=sort)
  if words is None or b == 0:
    return direct()
  blockwise = lambda: _blockwise_top_k(query, keys, valid, k, b, use_xla, sort,  # noqa: E731
                                       word_weights)
  if block_size is not None:
    return blockwise()  # explicitly asked for
  n = query.shape[1]
  if n is not None:
    return blockwise() if n >= _MIN_BLOCKWISE_CANDIDATES else direct()
  return tf.cond(tf.shape(query)[1] >= _MIN_BLOCKWISE_CANDIDATES, blockwise, direct)


def _blockwise_top_k(query, keys, valid, k: int, b: int, use_xla: bool, sort: bool,
                     word_weights=None):
  """hamming_top_k with blocks of b behaviors (module docstring, steps 1-4)."""
  words = query.shape[-1]

  # Per user (B x L work): padding, blocks, signatures of invalid behaviors replaced.
  batch, length = tf.shape(keys)[0], tf.shape(keys)[1]
  num_blocks = tf.maximum((length + b - 1) // b, k)
  padded_length = num_blocks * b
  pad = padded_length - length
  keys = tf.pad(keys, [[0, 0], [0, pad], [0, 0]])
  valid = tf.pad(valid, [[0, 0], [0, pad]])
  block_signatures = tf.reshape(keys, [batch, num_blocks, b, words])
  block_valid_elems = tf.reshape(valid, [batch, num_blocks, b])
  position = tf.reshape(tf.range(padded_length, dtype=tf.int32), [num_blocks, b])
  block_base = _order_keys(0, block_valid_elems, position, padded_length)
  first_valid = tf.argmax(tf.cast(block_valid_elems, tf.int32), axis=2,
                          output_type=tf.int32)
  replacement = tf.gather(block_signatures, first_valid, batch_dims=2)  # [B, nb, W]
  filled = tf.where(block_valid_elems[..., None], block_signatures,
                    replacement[:, :, None, :])
  block_valid = tf.reduce_any(block_valid_elems, axis=2)
  filled = tf.transpose(filled, [0, 3, 2, 1])  # [B, W, b, nb]

  if use_xla:
    # Bounded set of compiled shapes: N padded to a bucket size.
    n = tf.shape(query)[1]
    bucket_pad = bucket_size(n) - n
    padded_query = tf.pad(query, [[0, 0], [0, bucket_pad], [0, 0]])
    block_keys = _block_keys_xla(padded_query, filled, block_valid, word_weights)[:, :n]
    best_blocks = _k_smallest_positions(block_keys, k)
    order_key = _rescore_xla(padded_query, block_signatures, block_base,
                             tf.pad(best_blocks, [[0, 0], [0, bucket_pad], [0, 0]]),
                             padded_length, word_weights)[:, :n]
  else:
    block_keys = _block_keys(query, filled, block_valid, word_weights)
    best_blocks = _k_smallest_positions(block_keys, k)  # [B, N, k]
    order_key = _rescore(query, block_signatures, block_base, best_blocks, padded_length,
                         word_weights)
  return _decode(_k_smallest(order_key, k, sort), padded_length)
