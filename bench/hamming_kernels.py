"""Hamming top-k kernel variants: ns per (candidate, behavior) pair, side by side.

    python -m bench.hamming_kernels [--lengths 1024,4096,16384] [--n 1000] [--repeats 15]

One process; every variant is a tf.function over the same inputs (one user, N candidates,
W = 1 word = 64 bits, k = 48, 10% padding), variants interleaved round by round, median
over rounds. Prints a table and writes bench/results/hamming_kernels.json.

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
"""
import argparse
import json
import os
import sys
import time


import eta_tf  # noqa: E402,F401  (tf-keras env before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from eta_tf.ops import hamming  # noqa: E402

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


def variants(lengths):
  out = {"naive": naive,
         "design_b8": design_blockwise,
         "count": count_select,
         "distances": lambda q, key, v: hamming.hamming_distance(q, key)}
  for b in (4, 8, 16):
    out[f"keys_b{b}"] = (lambda b: lambda q, key, v: hamming.select_nearest(
        hamming.hamming_distance(q, key), v, K, block_size=b))(b)
  for b in (4, 8, 16, 32):
    out[f"fused_b{b}"] = (lambda b: lambda q, key, v: hamming.hamming_top_k(
        q, key, v, K, block_size=b))(b)
    out[f"xla_b{b}"] = (lambda b: lambda q, key, v: hamming.hamming_top_k(
        q, key, v, K, block_size=b, use_xla=True))(b)
  out["fused_default"] = lambda q, key, v: hamming.hamming_top_k(q, key, v, K)
  out["xla_default"] = lambda q, key, v: hamming.hamming_top_k(q, key, v, K, use_xla=True)
  del lengths
  return out


def make_inputs(n, length, seed=0):
  rng = np.random.default_rng(seed)
  query = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (1, n, 1),
                       dtype=np.int64, endpoint=True)
  keys = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (1, length, 1),
                      dtype=np.int64, endpoint=True)
  valid = np.ones((1, length), bool)
  valid[0, :length // 10] = False  # left padding, as the model feeds short histories
  return tf.constant(query), tf.constant(keys), tf.constant(valid)


def bench(lengths, n, repeats, names=None, check=True):
  records = []
  for length in lengths:
    inputs = make_inputs(n, length, seed=length)
    # Static L like the model (fit_history pins it); N stays dynamic like a request.
    spec = [tf.TensorSpec([1, None, 1], tf.int64), tf.TensorSpec([1, length, 1], tf.int64),
            tf.TensorSpec([1, length], tf.bool)]
    fns = {}
    for name, fn in variants(lengths).items():
      if names and name not in names:
        continue
      fns[name] = tf.function(fn, input_signature=spec)
    reference = None
    for name, fn in fns.items():
      out = fn(*inputs)
      if check and name != "distances":
        got = [t.numpy() for t in out]
        if reference is None:
          reference = got
        else:
          for a, b in zip(got, reference):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} differs at L={length}")
    times = {name: [] for name in fns}
    for _ in range(repeats):
      for name, fn in fns.items():
        start = time.perf_counter()
        out = fn(*inputs)
        _ = [t.numpy() for t in tf.nest.flatten(out)]
        times[name].append(time.perf_counter() - start)
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
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--variants", default="", help="comma-separated subset")
  parser.add_argument("--output", default=RESULTS)
  args = parser.parse_args(argv)
  lengths = [int(x) for x in args.lengths.split(",")]
  names = [x for x in args.variants.split(",") if x] or None
  records = bench(lengths, args.n, args.repeats, names)
  print("\nns per (candidate, behavior) pair, median; rows = variant, columns = L")
  kernels = list(dict.fromkeys(r["kernel"] for r in records))
  print(f"{'variant':14s}" + "".join(f"{L:>10d}" for L in lengths))
  for kernel in kernels:
    row = {r["L"]: r["ns_per_pair"] for r in records if r["kernel"] == kernel}
    print(f"{kernel:14s}" + "".join(f"{row.get(L, float('nan')):10.3f}" for L in lengths))
  if args.output:
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
      json.dump({"n": args.n, "k": K, "words": 1, "repeats": args.repeats,
                 "records": records}, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
