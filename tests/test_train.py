"""`python -m eta_tf.train` end to end: errors, determinism, evaluation, workers (SIGKILL and
resume: test_train_faults.py)."""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import SMALL_TRAIN_FLAGS
from conftest import run_module
from eta_tf import features as F


def _train(*args, **kw):
  return run_module("eta_tf.train", *SMALL_TRAIN_FLAGS, *args, **kw)


def _one_line_usage_error(result, *needles):
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  error_lines = [l for l in lines if l.startswith("eta_tf.train: error:")]
  assert len(error_lines) == 1, result.stderr
  for needle in needles:
    assert needle in error_lines[0], (needle, error_lines[0])


def test_bad_flags_fail_with_one_line_and_exit_2(tmp_path, small_data_dir):
  _one_line_usage_error(_train("--model=nope", check=False), "--model", "nope")
  _one_line_usage_error(_train(f"--data_dir={small_data_dir}", "--top_k=100",
                               check=False), "top_k=100", "max_len")
  _one_line_usage_error(_train(f"--data_dir={small_data_dir}", "--hash_bits=48",
                               check=False), "hash_bits=48")
  not_data = tmp_path / "not_data"
  not_data.mkdir()
  _one_line_usage_error(_train(f"--data_dir={not_data}", check=False), "--data_dir",
                        str(not_data), "schema")
  empty_eval = tmp_path / "empty_eval"
  shutil.copytree(small_data_dir, empty_eval)
  shutil.rmtree(empty_eval / "eval")
  _one_line_usage_error(_train(f"--data_dir={empty_eval}", check=False), "eval",
                        str(empty_eval))


def test_train_writes_metrics_and_is_deterministic(tmp_path, small_data_dir):
  # The two runs are independent processes (--num_threads=1 each), started together: the
  # second core trains the second run instead of idling.
  # 4 eval batches, not the whole eval split (3 passes of 216 batches per run): the
  # metrics still read every trained weight. test_train_faults runs the default.
  procs = [subprocess.Popen(
      [sys.executable, "-m", "eta_tf.train", *SMALL_TRAIN_FLAGS,
       f"--data_dir={small_data_dir}", f"--model_dir={tmp_path / f'run{i}'}", "--epochs=2",
       "--steps=8", "--eval_steps=4", "--num_threads=1", "--noexport", "--verbose=0"],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
  runs = []
  for i, proc in enumerate(procs):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    with open(tmp_path / f"run{i}" / "eval_metrics.json") as f:
      runs.append(json.load(f))
  a, b = runs
  for key in ("auc", "gauc", "logloss", "positive_rate", "overlap_at_8"):
    assert 0 <= a[key] < 10 and a[key] == pytest.approx(b[key], abs=1e-6), key
  assert a["train_steps"] == 16 and len(a["epoch_history"]) == 2
  assert (tmp_path / "run0" / "model_config.json").exists()
  assert any((tmp_path / "run0" / "tensorboard").iterdir())


def test_default_evaluation_reads_the_whole_eval_split(trained_eta, small_data_dir):
  """--eval_steps' default (None): every eval target once; a number: that many batches.
  (In-process on the session's model: the CLI runs here pass --eval_steps to stay fast.)"""
  from eta_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from eta_tf import data  # pylint: disable=g-import-not-at-top
  from eta_tf import training  # pylint: disable=g-import-not-at-top
  assert config_lib.TrainConfig().eval_steps is None
  model = trained_eta[1]
  dataset = data.make_dataset(small_data_dir, F.EVAL_SPLIT, model.config.max_len, 64,
                              shuffle=False, include_user_id=True)
  with open(os.path.join(small_data_dir, "stats.json")) as f:
    targets = json.load(f)["splits"]["eval"]["targets"]
  assert targets > 2 * 64
  assert training.evaluate(model, dataset)["eval_examples"] == targets
  with open(os.path.join(trained_eta[0], "eval_metrics.json")) as f:  # eval_steps=2
    assert json.load(f)["eval_examples"] == 2 * 64


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_multi_worker_training_on_localhost(tmp_path, small_data_dir, model="eta"):
  """Two workers (MultiWorkerMirroredStrategy on localhost) train eta user-batched (the
  default batching, whose path covers din's short attention too): the loss's target count
  is all-reduced, so both end with the same weights."""
  ports = [_free_port(), _free_port()]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "eta_tf.train", *SMALL_TRAIN_FLAGS, f"--model={model}",
         f"--data_dir={small_data_dir}", f"--model_dir={tmp_path / 'mw'}", "--epochs=1",
         "--steps=4", "--eval_steps=2", "--strategy=multi_worker", "--noexport",
         "--verbose=0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
    assert "no user-batched path" not in out
  with open(tmp_path / "mw" / "eval_metrics.json") as f:
    assert json.load(f)["train_steps"] == 4
  with open(tmp_path / "mw" / "train_config.json") as f:
    assert json.load(f)["batching"] == "user"
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only this test needs it)
  chief, other = (tf.train.load_checkpoint(str(tmp_path / "mw" / d / "final" / "weights"))
                  for d in ("", "worker_1"))
  names = [n for n in chief.get_variable_to_shape_map() if "embedding" in n or "kernel" in n]
  assert len(names) > 5
  for name in names:
    assert (chief.get_tensor(name) == other.get_tensor(name)).all(), name
