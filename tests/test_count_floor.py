"""bench/count_floor.py: preset names, legacy rows, paired gaps over seeds."""
import importlib.util
import os

import pytest

from bench import count_floor_summary as cfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def count_floor():
  spec = importlib.util.spec_from_file_location(
      "count_floor", os.path.join(ROOT, "bench", "count_floor.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_model_names_are_presets(count_floor):
  assert count_floor.model_config("eta_random", max_len=64).experiment == "eta_random"
  assert count_floor.model_config("eta_oracle", max_len=64).experiment == "eta_oracle"
  plain = count_floor.model_config("sim_hard", max_len=64)
  assert (plain.model, plain.experiment) == ("sim_hard", "")
  eta = count_floor.model_config("eta", max_len=64)
  assert (eta.signature_fields, eta.signature_distance, eta.experiment) == (
      "item_category", "category_first", "")
  assert count_floor.model_config("eta_paper", max_len=64).signature_fields == "item"
  fields = count_floor.model_config("eta_fields", max_len=64)
  assert (fields.signature_fields, fields.signature_distance) == ("item_category", "sum")


def test_legacy_rows_are_read_under_preset_names(count_floor, tmp_path):
  """Rows written before presets (no "preset" key): `eta` was item-only (eta_paper),
  `eta_category_first` the default before the summary (eta_no_summary); rows with a
  config are named by it; rows with a preset but no config keep their name."""
  import json  # pylint: disable=g-import-not-at-top
  from eta_tf import presets  # pylint: disable=g-import-not-at-top
  no_summary = presets.model_config("eta_no_summary").to_dict()
  default = presets.model_config("eta").to_dict()
  rows = [{"model": "eta", "seed": 0}, {"model": "eta_category_first", "seed": 0},
          {"model": "din_long", "seed": 0}, {"model": "eta", "preset": "eta", "seed": 1},
          # Rows with their config: named by the preset that config is today.
          {"model": "eta", "preset": "eta", "seed": 2, "config": no_summary},
          {"model": "eta_summary", "preset": "eta_summary", "seed": 2, "config": default}]
  path = tmp_path / "old.json"
  path.write_text(json.dumps({"setting": "s", "rows": rows}))
  assert [r["model"] for r in cfs.load(str(path))["rows"]] == [
      "eta_paper", "eta_no_summary", "din_long", "eta", "eta_no_summary", "eta"]


def test_merge_keeps_each_model_seed_once(count_floor, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  heuristics = {"item_count": {"auc": 0.6, "gauc": 0.6, "direction": 1}}
  def write(name, rows):
    path = tmp_path / name
    path.write_text(json.dumps({"setting": "s", "data_dir": "d", "commands": [name],
                                "rows": [{"model": m, "preset": m, "seed": 0, "auc": a,
                                          "gauc": a,
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
  # An existing output not listed among the inputs would lose its rows: refused, unchanged.
  before = (tmp_path / "out.json").read_text()
  with pytest.raises(SystemExit, match="out.json exists and is not among the inputs"):
    count_floor.merge(str(tmp_path / "out.json"), [write("c", [("din", 0.6)])])
  assert (tmp_path / "out.json").read_text() == before
  folded = count_floor.merge(str(tmp_path / "out.json"), [str(tmp_path / "out.json"),
                                                         str(tmp_path / "c")])
  assert [r["model"] for r in folded["rows"]] == ["eta", "din_long", "sim_hard", "din"]


def test_paired_gaps_and_best_heuristic(count_floor):
  heuristics = {"item_count": {"auc": 0.6, "gauc": 0.6, "direction": 1},
                "item_popularity": {"auc": 0.7, "gauc": 0.7, "direction": -1}}
  rows = [{"model": m, "seed": s, "auc": a, "gauc": a, "heuristics": heuristics}
          for m, s, a in (("eta", 0, 0.80), ("eta", 1, 0.82), ("din_long", 0, 0.79),
                          ("din_long", 1, 0.83), ("din_long", 2, 0.9))]
  summary = cfs.summarize(rows)
  assert summary["best_heuristic"] == "item_popularity"
  gap = summary["paired_auc_gaps"]["eta - din_long"]
  assert gap["seeds"] == 2  # seed 2 has no eta row: unpaired, left out
  assert gap["mean"] == pytest.approx(0.0) and gap["se"] == pytest.approx(0.01)
  best = summary["paired_auc_gaps"]["eta - best heuristic"]
  assert best["mean"] == pytest.approx(0.11) and best["seeds"] == 2
  # GAUC gaps pair the same seeds on each user's AUC; no heuristic among them.
  for row in rows:
    row["gauc"] = row["auc"] - 0.1 * (row["model"] == "eta") * row["seed"]
  gauc = cfs.summarize(rows)["paired_gauc_gaps"]
  assert gauc["eta - din_long"]["mean"] == pytest.approx(-0.05)
  assert gauc["eta - din_long"]["seeds"] == 2 and "eta - best heuristic" not in gauc


def test_target_lines_and_rendered_file(count_floor, tmp_path):
  """Each eta variant's targets from its paired gaps; fewer than 5 seeds never 'met'."""
  import json  # pylint: disable=g-import-not-at-top
  heuristics = {"item_count": {"auc": 0.7, "gauc": 0.7, "direction": 1}}
  aucs = {"eta_paper": 0.80, "eta": 0.83, "din_long": 0.82, "sim_hard": 0.825}
  rows = [{"model": m, "preset": m, "seed": s, "auc": a + 0.001 * s, "gauc": a,
           "best_epoch": 1, "heuristics": heuristics} for m, a in aucs.items()
          for s in range(5)]
  rows += [{"model": "eta_fields", "preset": "eta_fields", "seed": s, "auc": 0.9,
            "gauc": 0.9, "best_epoch": 1, "heuristics": heuristics} for s in range(2)]
  summary = cfs.summarize(rows)
  lines = cfs.target_lines(summary)
  paper = next(line for line in lines if line.startswith("* eta_paper:"))
  assert "din_long -0.0200 ± 0.0000 (≥ -0.002: not met)" in paper
  assert "best heuristic +0.1020 ± 0.0007 (≥ +0.020: met)" in paper
  first = next(line for line in lines if line.startswith("* eta:"))
  assert "din_long +0.0100 ± 0.0000 (≥ -0.002: met)" in first
  assert "sim_hard +0.0050 ± 0.0000 (≥ -0.002: met)" in first
  fields = next(line for line in lines if line.startswith("* eta_fields:"))
  assert "met" not in fields.replace("2 seeds < 5", "")
  path = tmp_path / "count_floor_x.json"
  path.write_text(json.dumps({"setting": "x", "data_dir": "d", "commands": ["c"],
                              "rows": rows, "summary": summary}))
  text = cfs.write_rendered(str(tmp_path / "COUNT_FLOOR.md"), [str(path)])
  assert (tmp_path / "COUNT_FLOOR.md").read_text() == text
  assert "| heuristic: item_count | 0.7000" in text and first in text
  # The default eta's row: targets with verdicts, then the comparisons without; a pair
  # that has no rows is '-', fewer than 5 seeds is named.
  row = ("| x (0.8320, sd 0.0016, 5) | +0.0100 ± 0.0000 met | +0.0050 ± 0.0000 met | "
         "+0.1320 ± 0.0007 met | +0.0100 ± 0.0000 | +0.0050 ± 0.0000 | +0.0300 ± 0.0000 | "
         "- | - | - | - | - | - | - |")
  assert row in cfs.default_table([str(path)]).splitlines() and row in text
  assert cfs._gap_cell({"mean": 0.01, "se": 0.002, "seeds": 3}, 0.0) == \
      "+0.0100 ± 0.0020 (3 seeds)"
  assert cfs._gap_cell({"mean": -0.01, "se": 0.002, "seeds": 5}, -0.002) == \
      "-0.0100 ± 0.0020 not met"


def test_summary_pairs_the_retrieval_controls_with_what_they_bound(count_floor):
  heuristics = {"item_count": {"auc": 0.7, "gauc": 0.7, "direction": 1}}
  aucs = {"eta_oracle": 0.81, "eta": 0.80, "sim_hard": 0.83}
  rows = [{"model": m, "seed": s, "auc": a + 0.002 * s * (m == "eta_oracle"), "gauc": a,
           "best_epoch": 1, "heuristics": heuristics} for m, a in aucs.items()
          for s in range(3)]
  gaps = cfs.summarize(rows)["paired_auc_gaps"]
  assert gaps["eta_oracle - sim_hard"]["mean"] == pytest.approx(-0.018)
  assert gaps["eta_oracle - eta"]["mean"] == pytest.approx(0.012)
  assert gaps["eta_oracle - eta"]["seeds"] == 3
  assert "eta_oracle - din_long" not in gaps  # no din_long rows


def test_extending_an_output_needs_its_weight_average():
  from bench import count_floor  # pylint: disable=g-import-not-at-top
  old = [{"model": "eta", "seed": 0}]  # written before the key: the last step's weights
  count_floor.check_same_protocol(old, 0.0, "out.json")
  count_floor.check_same_protocol([{"weight_average": 0.99}], 0.99, "out.json")
  with pytest.raises(SystemExit, match=r"--weight_average=0.99: out.json holds rows "
                                       r"trained with weight_average=\[0.0\]"):
    count_floor.check_same_protocol(old, 0.99, "out.json")


def test_extending_or_merging_needs_the_same_training_flags(count_floor, tmp_path):
  """Rows are paired by seed: an output written at --patience=1 --val_steps=20 is not
  extended, nor merged with, runs at other values; the message names each flag."""
  import json  # pylint: disable=g-import-not-at-top
  written = {"patience": 1, "val_steps": 20, "max_epochs": 4, "steps": 150}
  count_floor.check_same_flags(None, {"patience": 2}, "out.json")  # no recorded args
  count_floor.check_same_flags(written, dict(written, models="sim_hard"), "out.json")
  with pytest.raises(SystemExit, match=r"--patience=2 \(the file's: 1\); --val_steps=0 "
                                       r"\(the file's: 20\)"):
    count_floor.check_same_flags(written, dict(written, patience=2, val_steps=0), "out.json")

  def write(name, args):
    path = tmp_path / name
    path.write_text(json.dumps({"setting": "s", "data_dir": "d", "commands": [name],
                                "args": args, "rows": []}))
    return str(path)
  with pytest.raises(SystemExit, match="--max_epochs=10"):
    count_floor.merge(str(tmp_path / "out.json"), [write("a", written),
                                                   write("b", dict(written, max_epochs=10))])


def test_committed_commands_name_existing_presets():
  """Every command a results file lists must run today: its --models are presets."""
  import glob
  import json
  import re

  from eta_tf import presets
  for path in glob.glob(os.path.join(ROOT, "bench", "results", "count_floor_*.json")):
    with open(path) as f:
      results = json.load(f)
    commands = results.get("commands") or [results.get("command") or ""]
    for command in commands:
      for models in re.findall(r"--models=([\w,]+)", command):
        unknown = [m for m in models.split(",") if m not in presets.PRESETS]
        assert not unknown, (os.path.basename(path), unknown)


def test_validation_split_side_by_side_runs(count_floor, small_data_dir, tmp_path):
  """Two runs splitting the same setting at once: each writes its own partial file, the
  split holds every train record once (val users are user_id % val_every == 0), and no
  partial file is left."""
  import threading

  import tensorflow as tf

  from eta_tf import data
  from eta_tf import features as F

  out_dir = str(tmp_path / "split")
  errors = []

  def split():
    try:
      count_floor.split_train_users(small_data_dir, out_dir, 3)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
  threads = [threading.Thread(target=split) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors

  def users(files):
    return [int(data.parse_record(r)[F.USER_ID].numpy().reshape(-1)[0])
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
  train = users(data.record_files(small_data_dir, F.TRAIN_SPLIT))
  fit = users([os.path.join(out_dir, "fit", "part-0.tfrecord.gz")])
  val = users([os.path.join(out_dir, "val", "part-0.tfrecord.gz")])
  assert sorted(fit + val) == sorted(train)
  assert val and all(u % 3 == 0 for u in val) and all(u % 3 for u in fit)
  assert sorted(os.listdir(os.path.join(out_dir, "fit"))) == ["part-0.tfrecord.gz"]


def test_init_and_data_seeds_pin_their_part(count_floor, small_data_dir, tmp_path):
  """--init_seed / --data_seed: runs of different seeds with both parts pinned train the
  same model; pinning only the data order leaves the init to the seed."""
  import types

  from conftest import small_model_config
  pattern = count_floor.split_train_users(small_data_dir, str(tmp_path / "split"), 3)
  config = small_model_config("sim_hard")

  def auc(seed, init_seed, data_seed):
    args = types.SimpleNamespace(batch_size=32, steps=3, max_epochs=1, patience=1,
                                 val_steps=2, eval_steps=2, weight_average=0,
                                 eval_history=0, learning_rate=2e-3,
                                 embedding_learning_rate=0.5, init_seed=init_seed,
                                 data_seed=data_seed)
    return count_floor.train_early_stopped(config, small_data_dir, pattern, seed, args,
                                           None)["auc"]
  pinned = auc(0, 5, 5)
  assert auc(1, 5, 5) == pinned
  assert auc(1, None, 5) != pinned
