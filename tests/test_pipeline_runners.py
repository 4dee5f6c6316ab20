"""build_dataset off the in-process runner: Beam's portable path (the translation Flink and
Spark runners use) and multi-process workers give the DirectRunner's records and stats."""
import glob
import json

import pytest
import tensorflow as tf

from eta_tf import features
from pipelines import build_dataset, synthetic

RUNNERS = {
    "portable": ["--runner=PortableRunner", "--job_endpoint=embed",
                 "--environment_type=LOOPBACK"],
    "multi_processing": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
}


def canonical_records(out_dir):
  """{split: sorted records}, each parsed and re-serialised deterministically (a proto
  map's wire order is not fixed, the content is)."""
  out = {}
  for split in features.SPLITS:
    files = glob.glob(features.split_file_pattern(str(out_dir), split))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    out[split] = sorted(tf.train.Example.FromString(r.numpy()).SerializeToString(
        deterministic=True) for r in records)
  return out


def _without_bytes(stats):
  stats = json.loads(json.dumps(stats))
  stats.pop("bytes_written")
  for split in stats["splits"].values():
    split.pop("bytes_written")
  return stats


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("runners")
  log = synthetic.generate_log(synthetic.SyntheticConfig(num_users=12, seed=3, noise=0.02))
  path = synthetic.write_lines(str(tmp / "log.csv.gz"), log.lines)
  stats = build_dataset.run([f"--input={path}", f"--output_dir={tmp / 'direct'}"])
  return tmp, path, stats


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_runner_gives_the_direct_runners_records_and_stats(direct_run, runner):
  tmp, path, direct_stats = direct_run
  stats = build_dataset.run([f"--input={path}", f"--output_dir={tmp / runner}",
                             *RUNNERS[runner]])
  expected = canonical_records(tmp / "direct")
  assert all(expected[s] for s in features.SPLITS)
  assert canonical_records(tmp / runner) == expected
  assert _without_bytes(stats) == _without_bytes(direct_stats)
  with open(f"{tmp / runner}/{features.STATS_FILE}") as f:
    assert _without_bytes(json.load(f)) == _without_bytes(direct_stats)
