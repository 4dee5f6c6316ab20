"""build_dataset end to end on a small noisy synthetic log: counts, records, reproducibility."""
import collections
import glob
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from eta_tf import data, features
from pipelines import build_dataset, parsing, records, synthetic
from pipelines import dataset_stats

HISTORY_LENGTH = 1024  # build_dataset's default --history_length
NUM_USERS = 40  # ~8k events + noise: big enough for every path, small enough for CI


def _run(log_path, out_dir, *extra):
  return build_dataset.run([f"--input={log_path}", f"--output_dir={out_dir}", *extra])


def _serialized(out_dir, split):
  out = []
  for path in sorted(glob.glob(features.split_file_pattern(str(out_dir), split))):
    with gzip.open(path, "rb") as f:
      blob = f.read()
    pos = 0
    while pos < len(blob):  # TFRecord framing: u64 length, u32 crc, data, u32 crc
      n = int.from_bytes(blob[pos:pos + 8], "little")
      out.append(blob[pos + 12:pos + 12 + n])
      pos += 16 + n
  return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("e2e")
  log = synthetic.generate_log(synthetic.SyntheticConfig(num_users=NUM_USERS, seed=5,
                                                         noise=0.02))
  log_path = synthetic.write_lines(str(tmp / "log.csv.gz"), log.lines)
  stats = _run(log_path, tmp / "a")
  return log, log_path, tmp, stats


def test_row_counts_add_up(run):
  log, _, tmp, stats = run
  rows = stats["rows"]["behaviors"]
  assert rows["input"] == len(log.lines)
  assert rows["input"] == rows["accepted"] + rows["rejected"] and rows["balanced"]
  expected_rejects = {k: v for k, v in log.noise_counts.items() if k != "duplicates" and v}
  assert rows["rejected_by_reason"] == expected_rejects
  events = log.events
  tuples = list(zip(events.user_id.tolist(), events.timestamp.tolist(), events.item_id.tolist(),
                    events.category_id.tolist(), events.behavior_type.tolist()))
  assert rows["unique_accepted"] == len(set(tuples))
  assert rows["duplicates_removed"] == len(tuples) + log.noise_counts["duplicates"] - len(
      set(tuples))
  assert stats["users"] == NUM_USERS
  assert stats["items"] == len(set(events.item_id.tolist()))
  assert stats["categories"] == len(set(events.category_id.tolist()))
  # Dead letter: exactly the rejected rows, each with its reason.
  dead = []
  for path in glob.glob(os.path.join(tmp / "a", features.DEAD_LETTER_PREFIX + "-*")):
    with open(path, encoding="utf-8") as f:
      dead += f.read().splitlines()
  assert collections.Counter(line.split("\t")[1] for line in dead) == collections.Counter(
      expected_rejects)


def test_records_hold_the_documented_targets(run):
  log, _, tmp, stats = run
  out = str(tmp / "a")
  schema = data.read_schema(out)
  eval_start = schema["pipeline"]["eval_start"]
  assert eval_start == stats["time"]["eval_start"]
  events = log.events
  pv = events.behavior_type == features.BEHAVIOR_TYPES["pv"]
  positives = set(zip(events.user_id[pv].tolist(), events.timestamp[pv].tolist(),
                      events.item_id[pv].tolist()))
  category_of = dict(zip(events.item_id.tolist(), events.category_id.tolist()))
  seen_positives = set()
  fallbacks = collections.Counter()  # the draws that left the rule, as stats.json counts
  for split in features.SPLITS:
    decoded = [records.decode_example(s) for s in _serialized(out, split)]
    s = stats["splits"][split]
    assert len(decoded) == s["records"]
    assert sum(len(d.targets) for d in decoded) == s["targets"] == data.count_samples(out, split)
    for d in decoded:
      ts, labels = d.targets[:, 0], d.targets[:, 3]
      assert (np.diff(d.history[:, 0]) >= 0).all()
      assert ((ts >= eval_start) == (split == features.EVAL_SPLIT)).all()
      if split == features.TRAIN_SPLIT:
        assert (d.history[:, 0] < eval_start).all()
      # Each positive is followed by one negative, same time, matched on the user's own
      # history: a revisit's negative is another item of that history, any other
      # positive's is an item of its category that is not in it.
      pos, neg = d.targets[labels == 1], d.targets[labels == 0]
      assert len(pos) == len(neg)
      assert (pos[:, 0] == neg[:, 0]).all() and (pos[:, 1] != neg[:, 1]).all()
      # (The draw's history: the last --history_length behaviors strictly before.)
      for p, n in zip(pos.tolist(), neg.tolist()):
        before = set(d.history[d.history[:, 0] < p[0], 1][-HISTORY_LENGTH:].tolist())
        if p[1] in before:
          fallbacks["negatives_revisit_unmatched"] += n[1] not in before
        else:
          fallbacks["negatives_in_history"] += n[1] in before
          fallbacks["negatives_fallback_any"] += n[2] != p[2]
      assert all(category_of[i] == c for i, c in neg[:, 1:3].tolist())
      # Every kept positive has >= min_history (1) behaviors strictly before it.
      assert (np.searchsorted(d.history[:, 0], pos[:, 0], side="left") >= 1).all()
      seen_positives |= {(d.user_id, t, i) for t, i in pos[:, :2].tolist()}
  for counter in ("negatives_in_history", "negatives_revisit_unmatched"):
    assert fallbacks[counter] == stats[counter], counter
  assert fallbacks["negatives_fallback_any"] <= stats["negatives_fallback_any"]
  filtered = sum(stats["splits"][s]["filtered_min_history"] for s in features.SPLITS)
  assert seen_positives <= positives
  assert len(positives) - len(seen_positives) == filtered


def test_eval_samples_never_see_the_future(run):
  _, _, tmp, _ = run
  out = str(tmp / "a")
  ds = data.make_dataset(out, features.EVAL_SPLIT, max_len=32, batch_size=512, shuffle=False)
  got = data.unbatch_numpy(ds)
  assert len(got) == data.count_samples(out, features.EVAL_SPLIT)
  for sample, _ in got:
    hist_ts = sample[features.HIST_TIMESTAMP]
    real = sample[features.HIST_ITEM_ID] > 0
    assert (hist_ts[real] < sample[features.TARGET_TIMESTAMP]).all()
  reference = data.reference_samples(data.read_records(out, features.EVAL_SPLIT), 32)
  for (a, la), (b, lb) in zip(got, reference):
    assert la == lb and all(np.array_equal(a[k], b[k]) for k in b)


def test_rerun_same_seed_same_records(run):
  log, log_path, tmp, stats = run
  again = _run(log_path, tmp / "b", "--num_shards=3")  # other shard layout, same records
  assert len(glob.glob(features.split_file_pattern(str(tmp / "b"), "train"))) == 3
  for split in features.SPLITS:
    assert sorted(_serialized(tmp / "a", split)) == sorted(_serialized(tmp / "b", split))
  assert again["splits"]["eval"]["targets"] == stats["splits"]["eval"]["targets"]
  # Refuses to mix with an earlier run's shards unless --overwrite.
  with pytest.raises(SystemExit):
    _run(log_path, tmp / "b")


def test_impression_log_gives_the_targets(tmp_path):
  behaviors = ["1,10,100,pv,1511568000", "1,11,100,pv,1511568100", "2,12,101,buy,1511568050"]
  impressions = ["1,13,100,1511568100,1",  # sees only the first behavior (strictly before)
                 "1,14,100,1511568200,0", "1,14,100,1511568200,0",  # duplicate
                 "2,10,100,1511568000,1",  # no prior behavior: filtered by min_history
                 "3,10,100,1511568200,7",  # bad label
                 "9,10,100,1511568300,1"]  # user without behaviors, no history: filtered
  (tmp_path / "b.csv").write_text("\n".join(behaviors) + "\n")
  (tmp_path / "i.csv").write_text("\n".join(impressions) + "\n")
  stats = _run(tmp_path / "b.csv", tmp_path / "out", f"--impressions={tmp_path / 'i.csv'}",
               "--eval_start=1511568150")
  imp = stats["rows"]["impressions"]
  assert (imp["input"], imp["accepted"], imp["rejected"], imp["duplicates_removed"]) == (
      6, 5, 1, 1)
  assert imp["rejected_by_reason"] == {parsing.REASON_BAD_LABEL: 1}
  train, ev = stats["splits"]["train"], stats["splits"]["eval"]
  assert (train["targets"], train["filtered_min_history"]) == (1, 1)
  assert (ev["targets"], ev["positives"], ev["filtered_min_history"]) == (1, 0, 1)
  samples = data.unbatch_numpy(data.make_dataset(
      str(tmp_path / "out"), "train", max_len=4, batch_size=8, shuffle=False))
  assert len(samples) == 1
  sample, label = samples[0]
  assert label == 1.0 and sample[features.TARGET_ITEM_ID] == 13
  assert sample[features.HIST_ITEM_ID].tolist() == [0, 0, 0, 10]


def test_commands_have_help():
  for module in ("pipelines.build_dataset", "pipelines.synthetic"):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                         text=True, timeout=120, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert "usage:" in out.stdout and "--seed" in out.stdout
  assert json.dumps(dataset_stats.schema_with_params({"a": 1}, {"eval_start": 2}))
