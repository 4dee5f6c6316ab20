"""Test-wide setup: tf-keras before TensorFlow, quiet TF logs, one fixed seed."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import eta_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

SMALL_TRAIN_FLAGS = ["--max_len=64", "--short_len=8", "--top_k=8", "--item_buckets=4096",
                     "--category_buckets=512", "--item_dim=16", "--category_dim=8",
                     "--num_heads=2", "--head_dim=8", "--mlp_units=32", "--batch_size=64"]


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
