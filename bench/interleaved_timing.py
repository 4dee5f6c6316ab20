"""Interleaved timing of several callables: one call of each per round, in turn.

Interleaving makes the ratios between the callables share the machine's state (a shared
machine's load moves under a benchmark); bench/serving_cost_grid.py and
bench/serving_cost_components.py time everything through it.
"""
import time

import numpy as np


def time_rounds(fns: dict, repeats: int, warmup: int = 2, budget_s: float = 0.0,
                min_rounds: int = 3) -> dict:
  """{name: [seconds per round]}; one call of every fn per round, in turn.

  budget_s > 0: stop after the first round that ends past budget_s seconds (counted from
  the first timed round), once min_rounds are done; the lists then hold fewer than
  `repeats` rounds (the records say how many).
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  started = time.perf_counter()
  for i in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
    if budget_s > 0 and i + 1 >= min_rounds and time.perf_counter() - started > budget_s:
      break
  return times


def time_interleaved(fns: dict, repeats: int, warmup: int = 2, budget_s: float = 0.0) -> dict:
  """{name: median seconds}; one call of every fn per round."""
  return {name: float(np.median(v))
          for name, v in time_rounds(fns, repeats, warmup, budget_s).items()}
