"""bench/count_floor.py: model names with controls, paired gaps over seeds."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def count_floor():
  spec = importlib.util.spec_from_file_location(
      "count_floor", os.path.join(ROOT, "bench", "count_floor.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_model_names_carry_the_retrieval_control(count_floor):
  assert count_floor.model_config("eta_random", max_len=64).retrieval == "random"
  assert count_floor.model_config("eta_oracle", max_len=64).retrieval == "oracle"
  plain = count_floor.model_config("sim_hard", max_len=64)
  assert (plain.model, plain.retrieval) == ("sim_hard", "hamming")
  assert count_floor.model_config("din_long", max_len=64).model == "din_long"


def test_paired_gaps_and_best_heuristic(count_floor):
  heuristics = {"item_count": {"auc": 0.6, "gauc": 0.6, "direction": 1},
                "item_popularity": {"auc": 0.7, "gauc": 0.7, "direction": -1}}
  rows = [{"model": m, "seed": s, "auc": a, "gauc": a, "heuristics": heuristics}
          for m, s, a in (("eta", 0, 0.80), ("eta", 1, 0.82), ("din_long", 0, 0.79),
                          ("din_long", 1, 0.83), ("din_long", 2, 0.9))]
  summary = count_floor.summarize(rows)
  assert summary["best_heuristic"] == "item_popularity"
  gap = summary["paired_auc_gaps"]["eta - din_long"]
  assert gap["seeds"] == 2  # seed 2 has no eta row: unpaired, left out
  assert gap["mean"] == pytest.approx(0.0) and gap["se"] == pytest.approx(0.01)
  best = summary["paired_auc_gaps"]["eta - best heuristic"]
  assert best["mean"] == pytest.approx(0.11) and best["seeds"] == 2
