"""stats.json's numbers: per-split histograms and percentiles (SplitStats) and summed
counters (SumCounts), nested into one dict.
"""
import collections
from typing import Dict, Iterable

import apache_beam as beam
import numpy as np

from pipelines.parsing import KIND
from pipelines.records import prior_counts


def percentiles(histogram: Dict[int, int]) -> dict:
  """Nearest-rank p50/p90/p99/max (and mean) of values given as {value: count}."""
  total = sum(histogram.values())
  if not total:
    return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
  values = np.asarray(sorted(histogram), np.int64)
  cumulative = np.cumsum([histogram[v] for v in values])
  out = {"count": int(total),
         "mean": float(sum(v * c for v, c in histogram.items()) / total)}
  for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
    rank = int(np.ceil(q / 100 * total))  # smallest value with >= q% of values <= it
    out[name] = int(values[np.searchsorted(cumulative, rank)])
  out["max"] = int(values[-1])
  return out


class _SplitStatsFn(beam.CombineFn):
  """Counts and length histograms of one split's UserSequences."""

  def create_accumulator(self):
    return {"records": 0, "positives": 0, "negatives": 0,
            "record_history": collections.Counter(), "sample_history": collections.Counter()}

  def add_input(self, acc, sequence):
    labels = sequence.targets[:, KIND]
    acc["records"] += 1
    acc["positives"] += int((labels == 1).sum())
    acc["negatives"] += int((labels == 0).sum())
    acc["record_history"][len(sequence.history)] += 1
    acc["sample_history"].update(prior_counts(sequence).tolist())
    return acc

  def merge_accumulators(self, accumulators):
    accumulators = iter(accumulators)
    merged = next(accumulators)
    for acc in accumulators:
      for key, value in acc.items():
        merged[key] += value
    return merged

  def extract_output(self, acc):
    targets = acc["positives"] + acc["negatives"]
    return {
        "records": acc["records"],
        "targets": targets,
        "positives": acc["positives"],
        "negatives": acc["negatives"],
        "positive_rate": acc["positives"] / targets if targets else None,
        # Behaviors stored per record (the user's history in this split).
        "record_history_length": percentiles(acc["record_history"]),
        # Behaviors strictly before each target, before truncation to max_len.
        "sample_history_length": percentiles(acc["sample_history"]),
    }


class SplitStats(beam.PTransform):
  """One split's UserSequences -> singleton stats dict (records, targets, lengths ...)."""

  def expand(self, sequences):
    return sequences | "Stats" >> beam.CombineGlobally(_SplitStatsFn())


class SumDictsFn(beam.CombineFn):
  """Key-wise sum of {key: int} dicts (any hashable keys)."""

  def create_accumulator(self):
    return collections.Counter()

  def add_input(self, acc, counts):
    acc.update(counts)
    return acc

  def merge_accumulators(self, accumulators):
    merged = collections.Counter()
    for acc in accumulators:
      merged.update(acc)
    return merged

  def extract_output(self, acc):
    return dict(acc)


class SumCounts(beam.PTransform):
  """{name: int} dicts -> one dict of key-wise sums ({} for an empty input)."""

  def expand(self, counts):
    return counts | "Sum" >> beam.CombineGlobally(SumDictsFn())


def nest(entries: Iterable) -> dict:
  """[((key, subkey, ...), value), ...] -> nested dict."""
  out = {}
  for path, value in entries:
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out
