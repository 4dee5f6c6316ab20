"""What `python -m eta_tf.train` shows a user: a progress bar with a total (from the data's
stats.json) and an ETA, the time per epoch estimated at start, the evaluation on lines of
its own with its progress, eval AUC/GAUC in TensorBoard, step numbers that count the steps
run, no library noise, and on Ctrl-C one line with the command that resumes (exit 130).
On a 40-user log, so that each trainer run takes seconds."""
import json
import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import SMALL_TRAIN_FLAGS, run_module

BATCH, EPOCHS = 1024, 2
NOISE = ("Could not find cuda drivers", "absl::InitializeLog", "oneDNN custom operations",
         "apitools not found", "python-snappy", "Traceback")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
  """(data_dir, stdout, stderr): `python -m pipelines.prepare` on a 40-user log."""
  out = tmp_path_factory.mktemp("tiny_data") / "data"
  result = run_module("pipelines.prepare", f"--data_dir={out}", "--synthetic_users=40",
                      "--seed=7")
  return str(out), result.stdout, result.stderr


def test_prepare_shows_its_steps_and_the_next_command(tiny_data):
  data_dir, stdout, stderr = tiny_data
  assert stdout.splitlines() == [
      f"[1/2] Generating a synthetic Taobao-format log (40 users) -> {data_dir}.log.csv.gz",
      f"[2/2] Beam pipeline (DirectRunner) -> {data_dir}",
      f"Data ready in {data_dir}; train with: python -m eta_tf.train --data_dir={data_dir}"]
  # The job's own log lines (pipelines.*), the stats summary once, no Beam INFO lines.
  assert sum(line.endswith(" pipelines.build_dataset: stats:") for line in
             stderr.splitlines()) == 1
  assert "apache_beam" not in stderr
  assert os.path.exists(os.path.join(data_dir, "stats.json"))


def _train_args(data_dir, model_dir, *extra):
  return ["-m", "eta_tf.train", *SMALL_TRAIN_FLAGS, f"--data_dir={data_dir}",
          f"--model_dir={model_dir}", "--noexport", "--eval_steps=2", *extra]


def _run_in_terminal(args, timeout=300):
  """Runs `python args...` with stdout and stderr on a pseudo-terminal; (exit code, text)."""
  master, slave = pty.openpty()
  process = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL,
                             stdout=slave, stderr=slave, close_fds=True)
  os.close(slave)
  chunks = []

  def read():
    while True:
      try:
        data = os.read(master, 65536)
      except OSError:  # EIO: the child closed the terminal
        return
      if not data:
        return
      chunks.append(data)

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  code = process.wait(timeout=timeout)
  reader.join(10)
  os.close(master)
  return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def test_steps_per_epoch_from_the_split_stats():
  from eta_tf import training_callbacks as cb  # pylint: disable=g-import-not-at-top
  assert cb.steps_per_epoch({"targets": 1000}, 64) == 15
  assert cb.steps_per_epoch({"targets": 1000}, 64, drop_remainder=False) == 16
  assert cb.steps_per_epoch({"targets": 1024}, 64, drop_remainder=False) == 16
  assert cb.steps_per_epoch({"records": 3}, 64) is None
  assert cb.steps_per_epoch(None, 64) is None


@pytest.fixture(scope="module")
def terminal_run(tiny_data, tmp_path_factory):
  """Two epochs trained in a terminal, the total steps from stats.json: (exit code, text,
  model_dir, steps per epoch counted from the records)."""
  data_dir = tiny_data[0]
  from eta_tf import data  # pylint: disable=g-import-not-at-top
  # Read from the records: user-batched (the default), chunks of 32 targets.
  steps = data.count_samples(data_dir, "train", 32) // (BATCH // 32)
  model_dir = tmp_path_factory.mktemp("terminal") / "run"
  code, text = _run_in_terminal(_train_args(data_dir, model_dir, f"--epochs={EPOCHS}",
                                            f"--batch_size={BATCH}"))
  return code, text, model_dir, steps


def test_terminal_output_has_a_total_an_eta_and_evaluation_on_its_own_lines(
    terminal_run, tiny_data):
  code, text, model_dir, steps = terminal_run
  assert code == 0, text[-3000:]
  assert steps >= 8
  lines = text.split("\n")
  assert f"[1/1] Training eta (L=64, k=8, m=64) on {tiny_data[0]} -> {model_dir}" in lines
  assert (f"{steps} steps per epoch of {BATCH // 32} user chunks of up to 32 targets, "
          "evaluation 2 batches") in lines
  # Keras redraws the bar in place ("\r"): every state has the total and, until the end,
  # an ETA.
  states = [s for line in lines for s in line.split("\r") if re.match(r"\s*\d+/", s)]
  assert states and all(re.match(rf"\s*\d+/{steps} \[", s) for s in states), states[:3]
  # (Keras skips redraws closer than 0.05 s apart: which steps show depends on the speed.)
  running = [s for s in states if int(s.split("/")[0]) < steps]
  assert running and all(re.match(rf"\s*\d+/{steps} \[[=>.]+\] - ETA: \d", s)
                         for s in running), running[:8]
  estimate = [line for line in lines if line.startswith("time per step ~")]
  assert len(estimate) == 1, estimate
  assert re.fullmatch(rf"time per step ~[\d.e-]+ s \(steps 2-6\): ~\d[\d.]* (s|min) per "
                      rf"epoch of {steps} steps, ~\d[\d.]* (s|min) for {EPOCHS} epochs "
                      r"\(\+ evaluation\)", estimate[0]), estimate[0]
  # Each evaluation starts on a new line (the bar's line ended), shows its progress in
  # place and ends on its own line before its JSON.
  starts = [m.start() for m in re.finditer("evaluating 2 batches ...", text)]
  assert len(starts) == EPOCHS
  for start in starts:
    assert text[start - 1] == "\n"
    evaluation = text[start:].split("\n", 1)[0]
    assert "\revaluating 2/2 batches" in evaluation and " done in " in evaluation
    assert text[start:].split("\n", 2)[1].startswith("eval {")
  eval_lines = [line for line in lines if line.startswith("eval {")]
  assert [json.loads(line[5:])["epoch"] for line in eval_lines] == [1, 2]
  final = json.loads([line for line in lines if line.strip()][-1])
  # What AUC to expect: the eval AUC beside the training-free baselines on the same samples.
  from eta_tf import baselines as baselines_lib  # pylint: disable=g-import-not-at-top
  baselines = {name: final["heuristics"][name]["auc"] for name in baselines_lib.HEURISTICS}
  best = max(baselines, key=baselines.get)
  margin = final["auc"] - baselines[best]
  assert [line for line in lines if line.startswith("eval AUC ")] == [
      f"eval AUC {final['auc']:.4f}, GAUC {final['gauc']:.4f}; training-free baselines on "
      "the same samples (AUC): " + ", ".join(f"{n} {a:.4f}" for n, a in baselines.items())
      + f"; {'above' if margin > 0 else 'NOT above'} the best ({best}) by {margin:+.4f}"]
  for noise in NOISE:
    assert not any(noise in output for output in (text, *tiny_data[1:])), noise


def test_eval_auc_and_gauc_are_written_to_tensorboard_each_epoch(terminal_run):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, _, model_dir, _ = terminal_run
  event_dir = model_dir / "tensorboard" / "eval"
  scalars = {}
  for name in os.listdir(event_dir):
    for record in tf.data.TFRecordDataset(str(event_dir / name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  with open(model_dir / "eval_metrics.json") as f:
    history = json.load(f)["epoch_history"]
  assert sorted(scalars) == sorted((f"epoch_{m}", e) for m in ("auc", "gauc", "logloss")
                                   for e in range(EPOCHS))
  for epoch, result in enumerate(history):
    for metric in ("auc", "gauc", "logloss"):
      np.testing.assert_allclose(scalars[(f"epoch_{metric}", epoch)], result[metric],
                                 rtol=1e-6)


def test_ctrl_c_prints_one_line_with_the_command_that_resumes(tmp_path, tiny_data):
  steps, epochs = 15, 2
  model_dir = tmp_path / "run"
  args = _train_args(tiny_data[0], model_dir, f"--steps={steps}", f"--epochs={epochs}",
                     "--checkpoint_every_steps=3")
  process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  checkpoint = model_dir / "backup" / "chief" / "checkpoint"
  deadline = time.monotonic() + 300
  while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  assert process.poll() is None, "the trainer ended before its first checkpoint"
  process.send_signal(signal.SIGINT)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 130
  lines = [line for line in err.splitlines() if line.strip()]
  command = "python -m eta_tf.train " + shlex.join(args[2:])
  assert len(lines) == 1, err[-3000:]
  assert re.fullmatch(
      rf"eta_tf\.train: interrupted; last checkpoint {re.escape(str(checkpoint.parent))}/"
      rf"ckpt-\d+ \(epoch 1, step \d+ of it\); resume with: {re.escape(command)}",
      lines[0]), lines[0]
  # The printed command resumes: the run ends with the steps of an uninterrupted one.
  resumed = shlex.split(lines[0].split("resume with: ", 1)[1])
  assert resumed[:3] == ["python", "-m", "eta_tf.train"]
  subprocess.run([sys.executable, *resumed[1:]], check=True, capture_output=True,
                 timeout=300)
  with open(model_dir / "eval_metrics.json") as f:
    assert json.load(f)["train_steps"] == steps * epochs


def test_import_noise_filter_keeps_errors_and_python_output():
  from eta_tf import _keras_env  # pylint: disable=g-import-not-at-top
  banner = ("WARNING: All log messages before absl::InitializeLog() is called are written "
            "to STDERR\n")
  info = "I0000 00:00:1796612558.663012   14489 cudart_stub.cc:31] Could not find cuda\n"
  cpu = ("I0000 00:00:1796612711.178375   20698 cpu_feature_guard.cc:227] This TensorFlow "
         "binary is optimized\nTo enable the following instructions: AVX2 FMA\n")
  warning = "W0000 00:00:1796612558.663012   14489 some.cc:1] a warning\n"
  error = "E0000 00:00:1796612558.663012   14489 loader.cc:9] could not load libfoo.so\n"
  python = "Traceback (most recent call last):\nImportError: boom\n"
  text = banner + info + cpu + warning + error + python
  assert _keras_env.drop_import_noise(text, 3) == error + python
  assert _keras_env.drop_import_noise(text, 1) == warning + error + python
  assert _keras_env.drop_import_noise(text, 0) == info + cpu + warning + error + python
