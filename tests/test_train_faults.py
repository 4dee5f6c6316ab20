"""`python -m eta_tf.train` under faults: SIGKILL mid-epoch (after a BackupAndRestore
checkpoint), during the final evaluation and during the export; each restart with the same
flags resumes (after training: no step retrained) and the run ends with the step count of
an uninterrupted run and one published version; a model_dir trained with other flags is
refused, naming the field. (One chain of restarts, so that each kill point costs one
trainer process.)"""
import json
import os
import re
import signal
import subprocess
import sys
import time

from conftest import SMALL_TRAIN_FLAGS

STEPS, EPOCHS = 20, 2


def _args(small_data_dir, model_dir, export_base):
  # --eval_steps=2: the evaluations are not what is killed or resumed here (the default,
  # the whole eval split: test_train.test_default_evaluation_reads_the_whole_eval_split).
  return [sys.executable, "-m", "eta_tf.train", *SMALL_TRAIN_FLAGS,
          f"--data_dir={small_data_dir}", f"--model_dir={model_dir}", f"--epochs={EPOCHS}",
          f"--steps={STEPS}", "--checkpoint_every_steps=5", "--eval_steps=2",
          f"--export_base={export_base}", "--model_name=eta"]


def _kill_when(args, ready, timeout=300, stdout=subprocess.DEVNULL):
  """Starts the trainer, SIGKILLs it as soon as `ready()` is true; fails if it ended first."""
  proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  try:
    while not ready():
      assert proc.poll() is None, "the run ended before the point to kill it at"
      assert time.time() < deadline, "timed out waiting for the point to kill it at"
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()


def test_sigkill_during_eval_and_during_export_then_resume(tmp_path, small_data_dir):
  model_dir, export_base = tmp_path / "run", tmp_path / "export"
  args = _args(small_data_dir, model_dir, export_base)
  backup = model_dir / "backup"

  # 0. Killed mid-epoch, once the first BackupAndRestore checkpoint (step 5 of 20) is
  # complete (its `checkpoint` state file is written last).
  _kill_when(args, lambda: backup.is_dir() and any(
      p.name == "checkpoint" for p in backup.rglob("*")))
  assert not (model_dir / "final").exists()
  assert not (model_dir / "eval_metrics.json").exists()

  # 1. Restarted from that checkpoint; killed during the final evaluation: final weights
  # written, metrics not yet.
  with open(tmp_path / "run1.log", "w") as log:  # stdout is a file, not a terminal
    _kill_when(args, lambda: (model_dir / "final" / "train_state.json").exists(),
               stdout=log)
  # ... so Keras wrote one line per epoch (no \r progress bar), labels not doubled.
  run1 = (tmp_path / "run1.log").read_text()
  assert "s/epoch" in run1 and "eval_auc" in run1 and "\r" not in run1
  assert "eval_eval_examples" not in run1
  assert not (model_dir / "eval_metrics.json").exists()
  assert (model_dir / "backup").is_dir()

  # 2. Restarted, killed during the export (its temporary version dir exists).
  model_base = export_base / "eta"
  _kill_when(args, lambda: model_base.is_dir() and any(
      p.name.startswith(".tmp-") for p in model_base.iterdir()))
  assert (model_dir / "eval_metrics.json").exists()
  assert not (model_base / "1").exists() and (model_dir / "backup").is_dir()

  # 3. Restarted again: nothing retrained, the same step count, version 1 published. Run
  # with the product's own log defaults (no TF_CPP_MIN_LOG_LEVEL from conftest).
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming after training" in result.stdout
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["train_steps"] == EPOCHS * STEPS  # same total as an uninterrupted run
  assert summary["export"] == str(model_base / "1")
  assert (model_base / "1" / "saved_model.pb").exists()
  assert not (model_dir / "backup").exists()  # the run is finished
  # Quiet output: no CUDA probe error on a machine without a GPU driver, no TF
  # INFO lines from saving, no doubled progress-bar label, the export line names both
  # samples its AUCs come from.
  if not os.path.exists("/proc/driver/nvidia"):
    assert "failed call to cuInit" not in result.stderr
  assert "INFO:tensorflow" not in result.stderr + result.stdout
  # absl-format INFO lines logged from Python (saver, SavedModel writer, Beam); TensorFlow's
  # C++ banner before absl::InitializeLog (".cc:" lines) cannot be silenced.
  python_info = [l for l in (result.stderr + result.stdout).splitlines()
                 if re.match(r"I\d{4} [\d:.]+ +\d+ \S+\.py:\d+\]", l)]
  assert not python_info, python_info[:5]
  export_line = next(l for l in result.stdout.splitlines() if l.startswith("exported "))
  assert "on the first" in export_line and "training's eval: AUC" in export_line

  # 4. Other flags on the finished run: refused, naming the field; nothing written.
  before = (model_dir / "model_config.json").read_text()
  refused = subprocess.run(args + ["--hash_bits=32"], capture_output=True, text=True,
                           timeout=600)
  assert refused.returncode == 2, refused.stderr[-2000:]
  assert "Traceback" not in refused.stderr
  error = [l for l in refused.stderr.splitlines() if l.startswith("eta_tf.train: error:")]
  assert len(error) == 1 and "hash_bits=64" in error[0] and "--hash_bits=32" in error[0]
  assert (model_dir / "model_config.json").read_text() == before

  # 5. The same flags on the finished run: refused (exit 2), saying what it would replace
  # and the flag to ask for it; final/ and eval_metrics.json untouched.
  finished = {p: p.read_bytes() for p in [model_dir / "eval_metrics.json",
                                          *sorted((model_dir / "final").iterdir())]}
  again = subprocess.run(args, capture_output=True, text=True, timeout=600)
  assert again.returncode == 2, again.stderr[-2000:]
  (line,) = [l for l in again.stderr.splitlines() if l.startswith("eta_tf.train: error:")]
  assert "finished run" in line and "--overwrite" in line and "eval_metrics.json" in line
  assert {p: p.read_bytes() for p in finished} == finished

  # 6. --overwrite, killed at its first checkpoint: the finished run is still there, in
  # previous/ (it goes only when the new run completes).
  _kill_when(args + ["--overwrite"], lambda: backup.is_dir() and any(
      p.name == "checkpoint" for p in backup.rglob("*")))
  previous = model_dir / "previous"
  assert {previous / p.relative_to(model_dir): b for p, b in finished.items()} == {
      p: p.read_bytes() for p in [previous / "eval_metrics.json",
                                  *sorted((previous / "final").iterdir())]}
