"""Test-wide setup: tf-keras before TensorFlow, quiet TF logs, one fixed seed."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import eta_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

# The small configuration of every in-process and CLI test run, as config fields.
SMALL_MODEL = dict(max_len=64, short_len=8, top_k=8, item_buckets=4096, category_buckets=512,
                   item_dim=16, category_dim=8, num_heads=2, head_dim=8, mlp_units=(32,))
SMALL_BATCH_SIZE = 64
# The same configuration as `python -m eta_tf.train` flags (derived, never parsed back).
SMALL_TRAIN_FLAGS = [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                     for k, v in SMALL_MODEL.items()] + [f"--batch_size={SMALL_BATCH_SIZE}"]


def split_records(out_dir, splits=("train", "eval")):
  """{split: sorted serialized records} of a data dir (TFRecord framing read by hand: u64
  length, u32 crc, data, u32 crc; no TensorFlow)."""
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  from eta_tf import features  # pylint: disable=g-import-not-at-top
  records = {}
  for split in splits:
    records[split] = []
    for path in glob.glob(features.split_file_pattern(str(out_dir), split)):
      with gzip.open(path, "rb") as f:
        blob = f.read()
      pos = 0
      while pos < len(blob):
        n = int.from_bytes(blob[pos:pos + 8], "little")
        records[split].append(blob[pos + 12:pos + 12 + n])
        pos += 16 + n
    records[split].sort()
  return records


def run_module(module, *args, env=None, timeout=600, check=True):
  """Runs `python -m module args...`; returns CompletedProcess (text)."""
  result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
  if check and result.returncode != 0:
    raise AssertionError(f"{module} {' '.join(args)} exited {result.returncode}:\n"
                         f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
  return result


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory):
  """A real pipeline output: synthetic log (400 users) -> Beam DirectRunner -> TFRecords."""
  root = tmp_path_factory.mktemp("small_data")
  log = root / "behaviors.csv.gz"
  run_module("pipelines.synthetic", f"--output={log}", "--num_users=400", "--seed=7")
  out = root / "data"
  run_module("pipelines.build_dataset", f"--input={log}", f"--output_dir={out}",
             "--seed=7")
  return str(out)


def small_model_config(model="eta"):
  """The ModelConfig that `SMALL_TRAIN_FLAGS` give `python -m eta_tf.train`."""
  from eta_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.ModelConfig(model=model, **SMALL_MODEL)


def train_small(model, data_dir, model_dir, seed=0, steps=5):
  """Trains in-process like `eta_tf.train --noexport` with SMALL_TRAIN_FLAGS, 1 epoch.

  Returns the training-time model object (what train.main hands to the exporter).
  """
  from eta_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from eta_tf import training  # pylint: disable=g-import-not-at-top
  train_config = config_lib.TrainConfig(epochs=1, steps=steps, batch_size=SMALL_BATCH_SIZE,
                                        learning_rate=2e-3, seed=seed, eval_steps=2)
  _, trained = training.train(small_model_config(model), train_config, data_dir,
                              str(model_dir), verbose=0)
  return trained


@pytest.fixture(scope="session")
def trained_eta(small_data_dir, tmp_path_factory):
  """eta trained in-process on small_data_dir (5 steps): (model_dir, in-process model)."""
  model_dir = tmp_path_factory.mktemp("trained_eta") / "run"
  return str(model_dir), train_small("eta", small_data_dir, model_dir)
