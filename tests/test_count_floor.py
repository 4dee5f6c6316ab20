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
  assert count_floor.model_config("eta_attention_hash",
                                  max_len=64).retrieval == "attention_hash"
  plain = count_floor.model_config("sim_hard", max_len=64)
  assert (plain.model, plain.retrieval) == ("sim_hard", "hamming")
  assert count_floor.model_config("din_long", max_len=64).model == "din_long"
  fields = count_floor.model_config("eta_fields", max_len=64)
  assert (fields.model, fields.signature_fields) == ("eta", "item_category")
  first = count_floor.model_config("eta_category_first", max_len=64)
  assert (first.signature_fields, first.signature_distance) == ("item_category",
                                                                "category_first")
  # Row names keep their meaning whatever ModelConfig's default signature becomes.
  for name in ("eta", "eta_random", "eta_oracle"):
    assert count_floor.model_config(name, max_len=64).signature_fields == "item"


def test_merge_keeps_each_model_seed_once(count_floor, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  heuristics = {"item_count": {"auc": 0.6, "gauc": 0.6, "direction": 1}}
  def write(name, rows):
    path = tmp_path / name
    path.write_text(json.dumps({"setting": "s", "data_dir": "d", "commands": [name],
                                "rows": [{"model": m, "seed": 0, "auc": a, "gauc": a,
                                          "heuristics": heuristics} for m, a in rows]}))
    return str(path)
  merged = count_floor.merge(str(tmp_path / "out.json"), [
      write("a", [("eta", 0.8), ("din_long", 0.7)]), write("b", [("eta", 0.1),
                                                                   ("sim_hard", 0.75)])])
  assert [(r["model"], r["auc"]) for r in merged["rows"]] == [
      ("eta", 0.8), ("din_long", 0.7), ("sim_hard", 0.75)]
  assert merged["commands"] == ["a", "b"]
  assert merged["summary"]["paired_auc_gaps"]["eta - sim_hard"]["mean"] == \
      pytest.approx(0.05)


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


def test_target_lines_and_rendered_file(count_floor, tmp_path):
  """Each eta variant's targets from its paired gaps; fewer than 5 seeds never 'met'."""
  import json  # pylint: disable=g-import-not-at-top
  heuristics = {"item_count": {"auc": 0.7, "gauc": 0.7, "direction": 1}}
  aucs = {"eta": 0.80, "eta_category_first": 0.83, "din_long": 0.82, "sim_hard": 0.825}
  rows = [{"model": m, "seed": s, "auc": a + 0.001 * s, "gauc": a, "best_epoch": 1,
           "heuristics": heuristics} for m, a in aucs.items() for s in range(5)]
  rows += [{"model": "eta_fields", "seed": s, "auc": 0.9, "gauc": 0.9, "best_epoch": 1,
            "heuristics": heuristics} for s in range(2)]
  summary = count_floor.summarize(rows)
  lines = count_floor.target_lines(summary)
  eta = next(line for line in lines if line.startswith("* eta:"))
  assert "din_long -0.0200 ± 0.0000 (≥ -0.002: not met)" in eta
  assert "best heuristic +0.1020 ± 0.0007 (≥ +0.020: met)" in eta
  first = next(line for line in lines if line.startswith("* eta_category_first:"))
  assert "din_long +0.0100 ± 0.0000 (≥ -0.002: met)" in first
  assert "sim_hard +0.0050 ± 0.0000 (≥ +0.000: met)" in first
  fields = next(line for line in lines if line.startswith("* eta_fields:"))
  assert "met" not in fields.replace("2 seeds < 5", "")
  path = tmp_path / "count_floor_x.json"
  path.write_text(json.dumps({"setting": "x", "data_dir": "d", "commands": ["c"],
                              "rows": rows, "summary": summary}))
  text = count_floor.write_rendered(str(tmp_path / "COUNT_FLOOR.md"), [str(path)])
  assert (tmp_path / "COUNT_FLOOR.md").read_text() == text
  assert "| heuristic: item_count | 0.7000" in text and first in text
  # The default eta's row: targets with verdicts, then the comparisons without; a pair
  # that has no rows is '-', fewer than 5 seeds is named.
  row = ("| x (0.8320, 5) | +0.0100 ± 0.0000 met | +0.0050 ± 0.0000 met | "
         "+0.1320 ± 0.0007 met | +0.0300 ± 0.0000 | - | - | - | - |")
  assert row in count_floor.default_table([str(path)]).splitlines() and row in text
  assert count_floor._gap_cell({"mean": 0.01, "se": 0.002, "seeds": 3}, 0.0) == \
      "+0.0100 ± 0.0020 (3 seeds)"
  assert count_floor._gap_cell({"mean": -0.01, "se": 0.002, "seeds": 5}, -0.002) == \
      "-0.0100 ± 0.0020 not met"


def test_summary_pairs_the_retrieval_controls_with_what_they_bound(count_floor):
  heuristics = {"item_count": {"auc": 0.7, "gauc": 0.7, "direction": 1}}
  aucs = {"eta_oracle": 0.81, "eta_category_first": 0.80, "sim_hard": 0.83}
  rows = [{"model": m, "seed": s, "auc": a + 0.002 * s * (m == "eta_oracle"), "gauc": a,
           "best_epoch": 1, "heuristics": heuristics} for m, a in aucs.items()
          for s in range(3)]
  gaps = count_floor.summarize(rows)["paired_auc_gaps"]
  assert gaps["eta_oracle - sim_hard"]["mean"] == pytest.approx(-0.018)
  assert gaps["eta_oracle - eta_category_first"]["mean"] == pytest.approx(0.012)
  assert gaps["eta_oracle - eta_category_first"]["seeds"] == 3
  assert "eta_oracle - din_long" not in gaps  # no din_long rows
