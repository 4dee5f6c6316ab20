"""Train/eval splits that survive real timestamps.

A Taobao-format log whose 0.5% of rows carry timestamps months before the rest (as the
public UserBehavior file does) must still put ~--eval_fraction of the targets in eval;
--split=user_last must equal an independent numpy reference; no sample may see a behavior
at or after its target's time; a skewed split stops the job with exit code 2.
"""
import collections

import numpy as np
import pytest

from eta_tf import data, features
from pipelines import build_dataset, records, synthetic
from tests.test_pipeline_end_to_end import _serialized

PV = features.BEHAVIOR_TYPES["pv"]
MONTHS = 120 * 86400


@pytest.fixture(scope="module")
def outlier_log(tmp_path_factory):
  """~8k events of 40 users; 0.5% of rows moved 120 days back in time."""
  tmp = tmp_path_factory.mktemp("split")
  events = synthetic.generate_events(synthetic.SyntheticConfig(num_users=40, seed=11),
                                     np.random.default_rng(11))
  ts = events.timestamp.copy()
  rng = np.random.default_rng(0)
  moved = rng.choice(len(ts), int(round(0.005 * len(ts))), replace=False)
  ts[moved] -= MONTHS + rng.integers(0, 30 * 86400, len(moved))
  names = np.asarray(synthetic.BEHAVIOR_NAMES)[events.behavior_type - 1]
  lines = [f"{u},{i},{c},{b},{t}" for u, i, c, b, t in zip(
      events.user_id.tolist(), events.item_id.tolist(), events.category_id.tolist(),
      names.tolist(), ts.tolist())]
  path = synthetic.write_lines(str(tmp / "UserBehavior.csv"), lines)
  rows = np.stack([events.user_id, ts, events.item_id, events.category_id,
                   events.behavior_type], axis=1)
  return tmp, path, np.unique(rows, axis=0)  # distinct (user, ts, item, cat, type) rows


def _run(path, out, *flags):
  return build_dataset.run([f"--input={path}", f"--output_dir={out}", *flags])


def _decoded(out, split):
  return [records.decode_example(s) for s in _serialized(out, split)]


def _positive_targets(rows):
  """{user: sorted distinct (ts, item, cat) pv targets} -- as the job defines targets."""
  out = collections.defaultdict(set)
  for user, ts, item, cat, kind in rows.tolist():
    if kind == PV:
      out[user].add((ts, item, cat))
  return {user: sorted(t) for user, t in out.items()}


def _assert_no_future(out, eval_start_of_user):
  """Records: train history and targets before the user's eval start; samples strictly
  before their target (the trainer's reader, eta_tf.data)."""
  for split in features.SPLITS:
    for record in _decoded(out, split):
      start = eval_start_of_user(record.user_id)
      ts = record.targets[:, 0]
      if split == features.TRAIN_SPLIT:
        assert (record.history[:, 0] < start).all() and (ts < start).all()
      else:
        assert (ts >= start).all()
    ds = data.make_dataset(str(out), split, max_len=64, batch_size=256, shuffle=False)
    for sample, _ in data.unbatch_numpy(ds):
      real = sample[features.HIST_ITEM_ID] > 0
      assert (sample[features.HIST_TIMESTAMP][real] < sample[features.TARGET_TIMESTAMP]).all()


def test_time_split_ignores_old_outliers(outlier_log):
  tmp, path, rows = outlier_log
  # The old rule (last 10% of the min..max target range) would put nearly all in eval.
  pv_ts = rows[rows[:, 4] == PV, 1]
  old_start = pv_ts.max() - int(0.1 * (pv_ts.max() - pv_ts.min()))
  assert (pv_ts >= old_start).mean() > 0.9

  stats = _run(path, tmp / "time", "--eval_fraction=0.1")
  shares = {s: stats["splits"][s]["target_share"] for s in features.SPLITS}
  assert abs(shares["eval"] - 0.1) <= 0.02, shares
  assert shares["train"] + shares["eval"] == pytest.approx(1.0)
  assert stats["split_check"] == {"ok": True, "message": None}
  assert stats["time"]["method"] == "target_quantile"
  users = stats["users_with_targets"]
  for split in features.SPLITS:
    assert stats["splits"][split]["user_share"] == stats["splits"][split]["records"] / users
  eval_start = stats["time"]["eval_start"]
  _assert_no_future(tmp / "time", lambda user: eval_start)


def test_user_last_equals_numpy_reference(outlier_log):
  tmp, path, rows = outlier_log
  n = 3
  stats = _run(path, tmp / "last", "--split=user_last", f"--eval_targets_per_user={n}",
               "--negatives_per_positive=0")
  # Reference: each user's last n distinct pv targets (ties with the n-th last included)
  # are eval, the rest train; a target needs >= 1 behavior strictly before it.
  expected = {features.TRAIN_SPLIT: set(), features.EVAL_SPLIT: set()}
  starts = {}
  for user, targets in _positive_targets(rows).items():
    times = np.asarray([t[0] for t in targets])
    starts[user] = times[max(len(times) - n, 0)]
    history_ts = np.sort(rows[rows[:, 0] == user, 1])
    for ts, item, cat in targets:
      if np.searchsorted(history_ts, ts, side="left") >= 1:
        split = features.EVAL_SPLIT if ts >= starts[user] else features.TRAIN_SPLIT
        expected[split].add((user, ts, item, cat))
  for split in features.SPLITS:
    got = {(r.user_id, *t[:3]) for r in _decoded(tmp / "last", split)
           for t in r.targets.tolist()}
    assert got == expected[split], split
    assert stats["splits"][split]["targets"] == len(expected[split])
  assert stats["time"]["method"] == "user_last" and stats["split_check"]["ok"]
  _assert_no_future(tmp / "last", starts.__getitem__)


def _two_second_log(tmp_path):
  """10 users, each a cart then one pv: 6 pvs at t1, 4 at t2 -> eval share 40% or 0%."""
  t0, t1, t2 = 1511600000, 1511600100, 1511600200
  lines = []
  for user in range(1, 11):
    lines += [f"{user},{user},1,cart,{t0}", f"{user},{user + 50},1,pv,{t1 if user <= 6 else t2}"]
  path = tmp_path / "log.csv"
  path.write_text("\n".join(lines) + "\n")
  return path


def test_skewed_split_exits_2_naming_the_flags(tmp_path, capsys):
  path = _two_second_log(tmp_path)
  with pytest.raises(SystemExit) as exit_info:
    _run(path, tmp_path / "a", "--eval_fraction=0.1")
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("build_dataset: error: eval split holds 40.0%")
  for flag in ("--min_timestamp", "--eval_fraction", "--split=user_last",
               "--allow_skewed_split"):
    assert flag in err[0]
  # Empty split: an explicit --eval_start after every target.
  with pytest.raises(SystemExit) as exit_info:
    _run(path, tmp_path / "b", "--eval_start=1511700000")
  assert exit_info.value.code == 2
  assert "split eval is empty" in capsys.readouterr().err
  # --allow_skewed_split keeps the data and records the finding.
  stats = _run(path, tmp_path / "c", "--eval_fraction=0.1", "--allow_skewed_split")
  assert stats["splits"]["eval"]["target_share"] == pytest.approx(0.4)
  assert not stats["split_check"]["ok"] and "40.0%" in stats["split_check"]["message"]


def test_input_that_matches_no_file_exits_2_naming_the_flag(tmp_path, capsys):
  """A mistyped --input / --impressions stops before the job (which would otherwise run on
  zero rows and blame the split), and writes nothing."""
  path = _two_second_log(tmp_path)
  for flags, named in ((["--input=" + str(tmp_path / "missing*.csv")], "--input="),
                       (["--input=" + str(path), "--impressions=" + str(tmp_path / "no.csv")],
                        "--impressions=")):
    with pytest.raises(SystemExit) as exit_info:
      build_dataset.run(flags + ["--output_dir=" + str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{named}'{tmp_path}" in err and "no file matches" in err
    assert not (tmp_path / "out").exists()
