"""build_dataset --user_shards=N: the same records, dead letter and stats as one pipeline."""
import glob
import json
import random
import zlib

import pytest

from conftest import split_records
from eta_tf import features
from pipelines import build_dataset, parsing, sharded, synthetic

# Lines that exercise the routing: every accepted row of one user must reach one shard.
ODD_LINES = [
    b"\xef\xbb\xbf6,1,2,pv,1511600000",  # BOM before the user id
    b" 0006 ,9,9,pv,1511600001\r",  # same user 6, spaces, leading zeros, CR
    b"xx,1,1,pv,1511600002",  # non-integer user: rejected wherever it lands
    b"5,1,2,pv",  # wrong column count, readable user
    b"\xff\xfe,1,2,pv,1511600003",  # invalid UTF-8
    b"",  # empty line
    b"-3,1,2,pv,1511600004",  # non-positive user
]


def _records(out_dir):
  return split_records(out_dir, features.SPLITS)


def _dead_letter(out_dir):
  lines = []
  for path in glob.glob(f"{out_dir}/{features.DEAD_LETTER_PREFIX}-*"):
    with open(path, encoding="utf-8") as f:
      lines += f.read().splitlines()
  return sorted(lines)


def _comparable(stats):
  """stats.json minus what legitimately differs: gzip byte counts and the shard count."""
  stats = json.loads(json.dumps(stats))
  stats.pop("bytes_written")
  for split in stats["splits"].values():
    split.pop("bytes_written")
  assert stats["params"].pop("user_shards") >= 1
  return stats


def _assert_same_job(one_dir, one_stats, sharded_dir, sharded_stats):
  one, many = _records(one_dir), _records(sharded_dir)
  assert all(one[s] for s in features.SPLITS)
  assert one == many
  assert _dead_letter(one_dir) == _dead_letter(sharded_dir)
  assert _comparable(one_stats) == _comparable(sharded_stats)
  assert not glob.glob(f"{sharded_dir}/_user_shards*")  # intermediate files removed


@pytest.fixture(scope="module")
def noisy_log(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sharded")
  log = synthetic.generate_log(synthetic.SyntheticConfig(num_users=30, seed=11, noise=0.02))
  lines = [l.encode() if isinstance(l, str) else l for l in log.lines] + ODD_LINES
  path = tmp / "log.csv"
  path.write_bytes(b"\n".join(lines) + b"\n")
  return tmp, path


def test_time_split_matched_negatives_same_as_one_pipeline(noisy_log):
  # 2 shards (each costs ~6 s of pipelines): user 6's odd lines belong in shard 0, where
  # neither a hash of their raw user field nor of the whole line would put them.
  for line in ODD_LINES[:2]:
    assert sharded.user_shard(line, 2) == 0
    assert zlib.crc32(line.split(b",")[0]) % 2 == zlib.crc32(line) % 2 == 1
  tmp, path = noisy_log
  one = build_dataset.run([f"--input={path}", f"--output_dir={tmp / 'one'}"])
  many = build_dataset.run([f"--input={path}", f"--output_dir={tmp / 'many'}",
                            "--user_shards=2"])
  assert many["params"]["user_shards"] == 2
  assert many["rows"]["behaviors"]["rejected"] >= len(ODD_LINES) - 2
  _assert_same_job(tmp / "one", one, tmp / "many", many)


def test_impressions_user_last_same_as_one_pipeline(tmp_path):
  rng = random.Random(3)
  behaviors, impressions = [], []
  for user in range(1, 41):
    for t in range(rng.randint(1, 12)):
      behaviors.append(f"{user},{rng.randint(1, 60)},{rng.randint(1, 5)},pv,{1000 + 10 * t}")
    for t in range(rng.randint(0, 5)):
      impressions.append(f"{user},{rng.randint(1, 60)},{rng.randint(1, 5)},"
                         f"{1005 + 10 * t},{rng.randint(0, 1)}")
  impressions += ["7,1,1,1200,2", " 07 ,3,1,1210,1"]  # bad label; user 7 with spaces
  # ... whose line a hash of its bytes would put in the other one of the 2 shards.
  assert sharded.user_shard(b" 07 ,3,1,1210,1", 2) != zlib.crc32(b" 07 ,3,1,1210,1") % 2
  (tmp_path / "b.csv").write_text("\n".join(behaviors) + "\n")
  (tmp_path / "i.csv").write_text("\n".join(impressions) + "\n")
  flags = [f"--input={tmp_path / 'b.csv'}", f"--impressions={tmp_path / 'i.csv'}",
           "--split=user_last"]
  one = build_dataset.run(flags + [f"--output_dir={tmp_path / 'one'}"])
  many = build_dataset.run(flags + [f"--output_dir={tmp_path / 'many'}", "--user_shards=2"])
  assert many["rows"]["impressions"]["rejected_by_reason"] == {parsing.REASON_BAD_LABEL: 1}
  _assert_same_job(tmp_path / "one", one, tmp_path / "many", many)


def test_every_accepted_row_of_a_user_goes_to_one_shard():
  rng = random.Random(0)
  pads = [b"", b" ", b"\t", b"0", b"00", b"\xef\xbb\xbf"]
  for _ in range(2000):
    user = rng.randint(1, 10 ** 12)
    field = (rng.choice(pads[-1:] + [b""]) + rng.choice(pads[:3]) +
             rng.choice([b"", b"0", b"000"]) + str(user).encode() + rng.choice(pads[:3]))
    line = field + b",4,5,pv,1511600000" + rng.choice([b"", b"\r"])
    parsed, reason = parsing.parse_behavior_line(line)
    assert reason is None and parsed[0] == user, line
    assert parsing.user_field_id(line) == user
    assert sharded.user_shard(line, 7) == zlib.crc32(str(user).encode()) % 7
  # An unreadable user id is placed by the bytes of the line (and rejected there).
  assert parsing.user_field_id(b"u1,2,3,pv,4") is None
  assert sharded.user_shard(b"u1,2,3,pv,4", 7) == zlib.crc32(b"u1,2,3,pv,4") % 7


def test_user_shards_flag_is_validated(capsys):
  with pytest.raises(SystemExit) as exit_info:
    build_dataset.run(["--input=x", "--output_dir=y", "--user_shards=0"])
  assert exit_info.value.code == 2
  assert "--user_shards: must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("rows", [0, 1, 7, 5000])
def test_aggregate_rows_equals_numpy_unique_reference(rows):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from pipelines import records  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(rows)
  keys = rng.integers(-3, 4, (rows, 3)) * (1 << 40)  # negatives and > 32-bit values
  weights = rng.integers(1, 5, rows)
  got = records.aggregate_rows(keys, weights)
  if rows:
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    expected = np.concatenate([distinct, np.bincount(
        inverse.reshape(-1), weights=weights).astype(np.int64)[:, None]], axis=1)
  else:
    expected = np.zeros((0, 4), np.int64)
  assert got.dtype == np.int64 and np.array_equal(got, expected)
  assert np.array_equal(records.unique_rows(keys), expected[:, :3])
