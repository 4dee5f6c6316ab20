"""The per-user leakage statistic (occurrences of the candidate in the sample's own
history) and the matched sampler's match on it: on a log without revisits and on one with
many, the job's AUC equals an independent numpy reference and lands within 0.03 of 0.5;
leaky negatives are reported, and refused with --refuse_leaky_negatives."""
import json
import logging

import numpy as np
import pytest

from conftest import split_records
from pipelines import build_dataset, negative_history as H, negatives as N, synthetic
from pipelines.records import UserSequence, decode_example

LENGTH = 64  # --history_length, shorter than many histories: the last-L cut matters


def _log(tmp, revisits: bool) -> str:
  """A Taobao-preset log (about a quarter of positives revisit an item), or the same log
  with only each user's first behavior with an item (no revisit at all)."""
  params = dict(synthetic.TAOBAO_PRESET, num_categories=200)
  lines = synthetic.generate_log(synthetic.SyntheticConfig(num_users=300, seed=1,
                                                           **params)).lines
  if not revisits:
    rows = sorted((int(l.split(",")[4]), l) for l in lines)
    first = {}
    for _, line in rows:
      first.setdefault(tuple(line.split(",")[:2]), line)
    lines = list(first.values())
  return synthetic.write_lines(str(tmp / "log.csv"), lines)


def _occurrences(out_dir, split):
  """(positives' values, negatives' values) of the score, read from the written records:
  per sample, how often its item occurs among its user's last LENGTH behaviors strictly
  before its time (plain numpy, per sample)."""
  values = {0: [], 1: []}
  for record in split_records(out_dir, (split,))[split]:
    sequence = decode_example(record)
    times, items = sequence.history[:, 0], sequence.history[:, 1]
    for time, item, _, label in sequence.targets.tolist():
      values[label].append(int((items[times < time][-LENGTH:] == item).sum()))
  return np.asarray(values[1]), np.asarray(values[0])


def _rank_auc(positives, negatives) -> float:
  """Mann-Whitney AUC from average ranks (ties share their mean rank)."""
  values = np.concatenate([positives, negatives])
  _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
  mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
  rank_sum = mean_rank[inverse][:len(positives)].sum()
  n, m = len(positives), len(negatives)
  return float((rank_sum - n * (n + 1) / 2.0) / (n * m))


@pytest.mark.parametrize("revisits", [False, True])
def test_history_auc_equals_numpy_reference_and_is_balanced(tmp_path, revisits):
  out = tmp_path / "data"
  stats = build_dataset.run([f"--input={_log(tmp_path, revisits)}", f"--output_dir={out}",
                             f"--history_length={LENGTH}"])
  assert stats["params"]["history_length"] == LENGTH
  for split in ("train", "eval"):
    positives, negatives = _occurrences(out, split)
    revisit_share, in_history_share = (positives > 0).mean(), (negatives > 0).mean()
    if revisits:
      assert revisit_share > 0.15
    else:
      assert revisit_share == 0 and in_history_share == 0
    # The negatives in their own history follow the positives that revisit.
    assert abs(in_history_share - revisit_share) < 0.03, split
    reference = _rank_auc(positives, negatives)
    leakage = stats["splits"][split]["leakage"]
    assert abs(leakage["history_occurrences_auc"] - reference) < 1e-9, split
    for name in ("history_occurrences", "popularity", "seen_before_window"):
      assert abs(leakage[f"{name}_auc"] - 0.5) <= 0.03, (split, leakage)


def test_revisit_draws_take_other_items_of_the_history_nearest_in_counts():
  # History (oldest first): items 5, 6, 5, 7, 6, 5; target 0 revisits 5 (3 times before
  # it), target 1 revisits 6 at rank 2 (once before, in [0, 2)).
  history = np.asarray([[t, item, 1 if item != 7 else 2, 1] for t, item in
                        enumerate([5, 6, 5, 7, 6, 5])], np.int64)
  targets = np.asarray([[10, 5, 1, 1], [2, 6, 1, 1]], np.int64)
  sequence = UserSequence(4, history, targets)
  lo, hi = H.history_ranges(sequence, 100)
  occurrences = H.target_occurrences(sequence, 100, by_item_only=True)
  assert hi.tolist() == [6, 2] and occurrences.tolist() == [3, 1]
  drawn = H.revisit_draws(sequence, np.arange(2), lo, hi, occurrences, 4, 0, N.uniforms)
  by_target = {t: drawn[drawn[:, 0] == t] for t in (0, 1)}
  # Target 0: items 6 (twice, total 2) and 7 (once, total 1); none occurs 3 times, the
  # nearest in occurrences + 2 x total gap is 6 (|2-3| + 2|2-3| = 3 against 2 + 2 x 2).
  assert by_target[0][:, 2].tolist() == [6] * 4 and (by_target[0][:, 4] == 0).all()
  # Target 1: only item 5 (once) is another item in ranks [0, 2): as many occurrences.
  assert by_target[1][:, 2].tolist() == [5] * 4 and (by_target[1][:, 4] == 1).all()
  assert by_target[1][:, 3].tolist() == [1] * 4  # the category it was behaved with


def test_uniform_negatives_leak_the_job_warns_and_the_flag_refuses(tmp_path, caplog, capsys):
  cfg = synthetic.SyntheticConfig(num_users=300, seed=0, **synthetic.TAOBAO_PRESET)
  path = synthetic.write_lines(str(tmp_path / "t.csv"), synthetic.generate_log(cfg).lines)
  with caplog.at_level(logging.WARNING, logger="pipelines.build_dataset"), \
      pytest.raises(SystemExit) as exit_info:
    build_dataset.run([f"--input={path}", "--negative_sampler=uniform",
                       f"--output_dir={tmp_path / 'u'}", "--refuse_leaky_negatives"])
  assert exit_info.value.code == 3
  assert "sampled negatives leak" in caplog.text
  message = capsys.readouterr().err
  with open(tmp_path / "u" / "stats.json", encoding="utf-8") as f:
    written = json.load(f)  # stats.json is written before the refusal
  # Fresh positives vs old uniform negatives: the check says so, naming split and value.
  value = written["splits"]["eval"]["leakage"]["seen_before_window_auc"]
  assert value < 0.4
  assert f"eval seen_before_window_auc = {value:.4f}" in message
  assert "--refuse_leaky_negatives" in message
