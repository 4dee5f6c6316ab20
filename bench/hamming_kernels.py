"""Hamming top-k kernel variants: ns per (candidate, behavior) pair, side by side.

    python -m bench.hamming_kernels [--lengths 1024,4096,16384] [--n 1000] [--repeats 15]
    python -m bench.hamming_kernels --category_first --sizes 1024:200,4096:1000 \
        --variants fused_default,matmul,matmul_b4,... --output_name hamming_kernels_matmul

One process; every variant is a tf.function over the same inputs (one user, N candidates,
W = 1 word = 64 bits, or with --category_first the default eta's item ‖ category
signatures, W = 2 weighted (1, m + 1); k = 48, 10% padding), variants interleaved round
by round, median over rounds. Prints a table and writes bench/results/<output_name>.json
with the machine (CPU, load average before / after).

Variants:
  naive          XOR of [B,N,L,W] int64, int32 keys, one TopKV2 over L (the starting point)
  design_b8      docs/DESIGN.md §5: int32 keys over N x L, block minimum over an inner axis,
                 TopKV2 of blocks, TopKV2 of the k*b
  keys_b{b}      select_nearest(hamming_distance()): as design_b8 but NthElement + Where
                 selections instead of TopKV2
  fused_b{b}     hamming_top_k: uint8 distances, padding folded into the signatures, block
                 minima as b elementwise minima of [N, nb] slices, NthElement selections,
                 re-scored candidates
  xla_b{b}       hamming_top_k(use_xla=True): the distance + block-min pass under XLA
  count          exact counting selection over all L (bincount histogram -> threshold,
                 reverse cumsum for the ties, tf.where, a sort of k): no TopKV2 over L
  distances      hamming_distance alone (what any selection adds to)
  matmul         hamming_matmul.matmul_top_k: order keys from one float32 MatMul of the
                 unpacked ±1 signs, NthElement selection over all L
  matmul_b{b}    the same, blockwise (block minimum over the product, gather, select)
  matmul_keys    the product alone (sign unpacking + MatMul + key), no selection
"""
import argparse
import json
import os
import sys
import time


import eta_tf  # noqa: E402,F401  (tf-keras env before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import machine  # noqa: E402
from eta_tf.ops import hamming  # noqa: E402
from eta_tf.ops import hamming_matmul  # noqa: E402

K = 48
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "hamming_kernels.json")


def _topkv2_keys(query, keys, valid):
  """The original distances and int32 keys: [B,N,L,W] XOR, padding = INT32_MAX."""
  x = tf.bitwise.bitwise_xor(query[:, :, None, :], keys[:, None, :, :])
  distances = tf.reduce_sum(tf.cast(tf.raw_ops.PopulationCount(x=x), tf.int32), -1)
  length = tf.shape(distances)[-1]
  key = distances * length + (length - 1 - tf.range(length))
  return tf.where(valid[:, None, :], key, hamming.INT32_MAX), length


def _decode_topkv2(keys, length):
  mask = keys < hamming.INT32_MAX
  zeros = tf.zeros_like(keys)
  return (tf.where(mask, length - 1 - keys % length, zeros),
          tf.where(mask, keys // length, zeros), mask)


def naive(query, keys, valid, k=K):
  """The original formulation: [B,N,L,W] XOR, int32 keys, TopKV2 over all L."""
  key, length = _topkv2_keys(query, keys, valid)
  return _decode_topkv2(-tf.math.top_k(-key, k=k)[0], length)


def design_blockwise(query, keys, valid, k=K, b=8):
  """docs/DESIGN.md §5: block minima of int32 keys, TopKV2 of blocks, TopKV2 of the k*b."""
  key, length = _topkv2_keys(query, keys, valid)
  shape = tf.shape(key)
  blocks = tf.reshape(key, [shape[0], shape[1], -1, b])
  best = tf.math.top_k(-tf.reduce_min(blocks, -1), k=k)[1]
  cand = tf.reshape(tf.gather(blocks, best, batch_dims=2), [shape[0], shape[1], k * b])
  return _decode_topkv2(-tf.math.top_k(-cand, k=k)[0], length)


def count_select(query, keys, valid, k=K):
  """Exact selection by counting: distance histogram -> threshold, ties by recency."""
  distances = hamming.hamming_distance(query, keys)[0]  # [N, L] (B = 1)
  valid = valid[0]
  bins = 64 * query.shape[-1] + 2
  d = tf.where(valid[None, :], distances, bins - 1)  # padding: its own last bin
  hist = tf.math.bincount(d, minlength=bins, maxlength=bins, axis=-1)  # [N, bins]
  cum = tf.cumsum(hist, axis=1)
  threshold = tf.reduce_sum(tf.cast(cum < k, tf.int32), 1, keepdims=True)
  below = tf.gather(tf.pad(cum, [[0, 0], [1, 0]]), threshold, batch_dims=1)
  tie = tf.equal(d, threshold)
  later_ties = tf.cumsum(tf.cast(tie, tf.int32), axis=1, reverse=True)
  chosen = (d < threshold) | (tie & (later_ties <= k - below))
  coords = tf.where(chosen)  # exactly k per row (L >= k here), row-major
  n = tf.shape(d)[0]
  pos = tf.reshape(tf.cast(coords[:, 1], tf.int32), [n, k])
  length = tf.shape(d)[1]
  order_key = hamming._order_keys(  # pylint: disable=protected-access
      tf.gather(d, pos, batch_dims=1), tf.gather(valid, pos), pos, length)
  keys_sorted = tf.sort(order_key, axis=-1)
  out = hamming._decode(keys_sorted, length)  # pylint: disable=protected-access
  return tuple(t[None] for t in out)


def variants(word_weights=None):
  """{name: fn(query, keys, valid)}; naive / design / count only for unweighted W = 1."""
  w = word_weights
  out = {} if w else {"naive": naive, "design_b8": design_blockwise, "count": count_select}
  out["distances"] = lambda q, key, v: hamming.hamming_distance(q, key, w)
  for b in (4, 8, 16):
    out[f"keys_b{b}"] = (lambda b: lambda q, key, v: hamming.select_nearest(
        hamming.hamming_distance(q, key, w), v, K, block_size=b))(b)
  for b in (4, 8, 16, 32):
    out[f"fused_b{b}"] = (lambda b: lambda q, key, v: hamming.hamming_top_k(
        q, key, v, K, block_size=b, word_weights=w))(b)
    out[f"xla_b{b}"] = (lambda b: lambda q, key, v: hamming.hamming_top_k(
        q, key, v, K, block_size=b, use_xla=True, word_weights=w))(b)
  out["fused_default"] = lambda q, key, v: hamming.hamming_top_k(q, key, v, K,
                                                                 word_weights=w)
  out["xla_default"] = lambda q, key, v: hamming.hamming_top_k(q, key, v, K, use_xla=True,
                                                               word_weights=w)
  out["matmul"] = lambda q, key, v: hamming_matmul.matmul_top_k(q, key, v, K,
                                                                 word_weights=w)
  for b in (2, 4, 8, 16):
    out[f"matmul_b{b}"] = (lambda b: lambda q, key, v: hamming_matmul.matmul_top_k(
        q, key, v, K, block_size=b, word_weights=w))(b)
  out["matmul_keys"] = lambda q, key, v: hamming_matmul.matmul_keys(
      q, key, v, key.shape[1], w)
  return out


NO_SELECTION = ("distances", "matmul_keys")


def make_inputs(n, length, seed=0, words=1):
  rng = np.random.default_rng(seed)
  query = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (1, n, words),
                       dtype=np.int64, endpoint=True)
  keys = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (1, length, words),
                      dtype=np.int64, endpoint=True)
  if words > 1:
    # Category signatures: few distinct values (categories), so many equal distances.
    query[..., 1:] = query[..., 1:] % 17
    keys[..., 1:] = keys[..., 1:] % 17
  valid = np.ones((1, length), bool)
  valid[0, :length // 10] = False  # left padding, as the model feeds short histories
  return tf.constant(query), tf.constant(keys), tf.constant(valid)


def bench(sizes, repeats, names=None, check=True, word_weights=None):
  """sizes: [(L, N)]. Rounds interleave every variant at every size."""
  words = len(word_weights) if word_weights else 1
  cases = []
  for length, n in sizes:
    inputs = make_inputs(n, length, seed=length, words=words)
    # Static L like the model (fit_history pins it); N stays dynamic like a request.
    spec = [tf.TensorSpec([1, None, words], tf.int64),
            tf.TensorSpec([1, length, words], tf.int64), tf.TensorSpec([1, length], tf.bool)]
    fns = {name: tf.function(fn, input_signature=spec)
           for name, fn in variants(word_weights).items() if not names or name in names}
    reference = None
    for name, fn in fns.items():
      out = fn(*inputs)
      if check and name not in NO_SELECTION:
        got = [t.numpy() for t in out]
        if reference is None:
          reference = got
        else:
          for a, b in zip(got, reference):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} differs at L={length}")
    cases.append((length, n, inputs, fns, {name: [] for name in fns}))
  for r in range(repeats):
    for length, n, inputs, fns, times in cases:
      for name, fn in fns.items():
        start = time.perf_counter()
        out = fn(*inputs)
        _ = [t.numpy() for t in tf.nest.flatten(out)]
        times[name].append(time.perf_counter() - start)
    print(f"round {r + 1}/{repeats} load {machine.load_average()}", flush=True)
  records = []
  for length, n, _, _, times in cases:
    for name, values in times.items():
      median = float(np.median(values))
      records.append({"kernel": name, "L": length, "N": n, "median_ms": median * 1e3,
                      "ns_per_pair": median * 1e9 / (n * length)})
      print(f"L={length:6d} N={n:5d} {name:14s} {median * 1e3:9.2f} ms "
            f"{median * 1e9 / (n * length):7.3f} ns/pair", flush=True)
  return records


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--lengths", default="1024,4096,16384")
  parser.add_argument("--n", type=int, default=1000)
  parser.add_argument("--sizes", default="",
                      help="L:N pairs, e.g. 1024:200,4096:1000 (overrides --lengths/--n)")
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--variants", default="", help="comma-separated subset")
  parser.add_argument("--category_first", action="store_true",
                      help="the default eta's signatures: item ‖ category, W = 2, "
                           "weights (1, m + 1) with m = 64")
  parser.add_argument("--output_name", default="hamming_kernels",
                      help="results file bench/results/<name>.json ('' = none)")
  args = parser.parse_args(argv)
  if args.sizes:
    sizes = [tuple(int(v) for v in s.split(":")) for s in args.sizes.split(",")]
  else:
    sizes = [(int(x), args.n) for x in args.lengths.split(",")]
  names = [x for x in args.variants.split(",") if x] or None
  weights = (1, 65) if args.category_first else None
  load_before = machine.load_average()
  records = bench(sizes, args.repeats, names, word_weights=weights)
  print("\nns per (candidate, behavior) pair, median; rows = variant, columns = L:N")
  kernels = list(dict.fromkeys(r["kernel"] for r in records))
  print(f"{'variant':14s}" + "".join(f"{f'{L}:{n}':>12s}" for L, n in sizes))
  for kernel in kernels:
    row = {(r["L"], r["N"]): r["ns_per_pair"] for r in records if r["kernel"] == kernel}
    print(f"{kernel:14s}" + "".join(f"{row.get(s, float('nan')):12.3f}" for s in sizes))
  if args.output_name:
    output = os.path.join(os.path.dirname(RESULTS), args.output_name + ".json")
    with open(output, "w") as f:
      json.dump({"command": "python -m bench.hamming_kernels " + " ".join(
                     sys.argv[1:] if argv is None else argv),
                 "machine": dict(machine.describe(), load_before=load_before,
                                 load_after=machine.load_average()),
                 "k": K, "words": len(weights) if weights else 1,
                 "word_weights": list(weights) if weights else None,
                 "repeats": args.repeats, "records": records}, f, indent=1)
    print(f"wrote {output}")


if __name__ == "__main__":
  main()
