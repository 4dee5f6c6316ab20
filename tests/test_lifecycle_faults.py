"""One writer at a time, no command destroys the last good state, unknown flags refused.

Real processes throughout: two pipeline jobs on one --output_dir (the second refused at
once naming the first), an --overwrite job SIGKILLed mid-way (the old output untouched,
its stale lock and build dir taken over by the next job), outputs that did not finish or
were changed after (refused by the trainer's data check), a trainer on a model_dir held
by another process, and typos in the flags of every entry point (exit 2, did you mean).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_module
from eta_tf import features as F
from eta_tf import io_utils


def _wait_for(condition, proc, timeout=300):
  deadline = time.time() + timeout
  while not condition():
    assert proc.poll() is None, "the process ended before the point waited for"
    assert time.time() < deadline, "timed out"
    time.sleep(0.02)


def _build(log, out, *extra):
  return [sys.executable, "-m", "pipelines.build_dataset", f"--input={log}",
          f"--output_dir={out}", *extra]


def _files(directory):
  return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
          if p.is_file()}


def _hold(path):
  """Another real process holding the lock of `path`; returns the Popen."""
  proc = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from eta_tf.io_utils import DirectoryLock; "
       "DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(300)",
       str(path)], stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_pipeline_one_writer_overwrite_after_completion_and_kill_mid_job(tmp_path):
  from eta_tf import training  # pylint: disable=g-import-not-at-top  (TensorFlow)
  log = tmp_path / "log.csv.gz"
  run_module("pipelines.synthetic", f"--output={log}", "--num_users=120", "--seed=3")
  out, lock = tmp_path / "out", tmp_path / ".out.lock"

  # Two jobs on one output dir: the second is refused at once, naming the first.
  first = subprocess.Popen(_build(log, out), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: lock.exists() and lock.read_text().strip(), first)
  started = time.time()
  second = subprocess.run(_build(log, out), capture_output=True, text=True, timeout=120)
  assert second.returncode == 2, second.stderr[-2000:]
  assert f"pid {first.pid}" in second.stderr and "--output_dir" in second.stderr
  assert time.time() - started < 60
  assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
  training.check_data_dir(str(out))  # complete: the marker lists every file
  good = _files(out)
  assert F.COMPLETE_FILE in good and not lock.exists()

  # Again without --overwrite: refused, saying what it would replace and the flag.
  again = subprocess.run(_build(log, out), capture_output=True, text=True, timeout=120)
  assert again.returncode == 2 and "--overwrite" in again.stderr.splitlines()[-1]
  assert _files(out) == good

  # --overwrite SIGKILLed mid-job: the old output is untouched and still valid.
  killed = subprocess.Popen(_build(log, out, "--overwrite", "--seed=8"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  building = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".out.building-")]
  _wait_for(lambda: building() and any(building()[0].iterdir()), killed)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert _files(out) == good and lock.exists()  # a dead job's lock file and build dir
  training.check_data_dir(str(out))

  # The next --overwrite takes the stale lock over, sweeps the dead build, replaces.
  result = subprocess.run(_build(log, out, "--overwrite", "--seed=8"), capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert not building() and not lock.exists()
  with open(out / F.SCHEMA_FILE) as f:
    assert json.load(f)["pipeline"]["seed"] == 8
  training.check_data_dir(str(out))

  # An output that did not finish (no marker) or was changed after is never read.
  unfinished = tmp_path / "unfinished"
  shutil.copytree(out, unfinished)
  os.remove(unfinished / F.COMPLETE_FILE)
  with pytest.raises(training.UsageError, match=f"{F.COMPLETE_FILE} not found.*did not "
                     "finish.*--overwrite"):
    training.check_data_dir(str(unfinished))
  changed = tmp_path / "changed"
  shutil.copytree(out, changed)
  shard = sorted((changed / F.TRAIN_SPLIT).iterdir())[0]
  shard.write_bytes(shard.read_bytes()[:-10])
  with pytest.raises(training.UsageError, match=f"{shard.name} has .* bytes, the pipeline "
                     "wrote"):
    training.check_data_dir(str(changed))


def test_trainer_refused_on_a_held_model_dir_and_takes_a_dead_holders_lock(tmp_path):
  model_dir = tmp_path / "run"
  holder = _hold(model_dir)
  try:
    started = time.time()
    result = run_module("eta_tf.train", f"--model_dir={model_dir}",
                        f"--data_dir={tmp_path / 'nodata'}", check=False, timeout=120)
    assert result.returncode == 2
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("eta_tf.train: error:")]
    assert f"pid {holder.pid}" in line and f"--model_dir {model_dir}" in line
    assert time.time() - started < 30  # before TensorFlow is even imported
  finally:
    holder.kill()
    holder.wait()
  # The holder died without releasing: its lock file is taken over, the run goes on
  # (to the next check, here the missing data dir).
  result = run_module("eta_tf.train", f"--model_dir={model_dir}",
                      f"--data_dir={tmp_path / 'nodata'}", check=False, timeout=300)
  assert result.returncode == 2
  assert f"taking over the lock of a process that is gone (pid {holder.pid}" in result.stderr
  assert "no such directory" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("module,typo,suggestion", [
    ("pipelines.build_dataset", "--min_timestmp=1511539200", "--min_timestamp"),
    ("eta_tf.train", "--hash_bit=32", "--hash_bits"),
    ("eta_tf.export", "--model_dirr=x", "--model_dir"),
    ("pipelines.synthetic", "--num_usres=5", "--num_users"),
    ("serving.local_server", "--prot=8500", "--port"),
])
def test_unknown_flags_exit_2_with_did_you_mean(tmp_path, module, typo, suggestion):
  log = tmp_path / "log.csv"
  log.write_text("1,2,3,pv,1511600000\n")
  extra = {"pipelines.build_dataset": [f"--input={log}", f"--output_dir={tmp_path / 'out'}"],
           "pipelines.synthetic": [f"--output={tmp_path / 'out'}"]}.get(module, [])
  result = run_module(module, *extra, typo, check=False, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert f"did you mean {suggestion}?" in last and typo.split("=")[0] in last
  assert not (tmp_path / "out").exists()


def test_beam_pipeline_options_still_pass(tmp_path):
  log = tmp_path / "log.csv"
  log.write_text("".join(f"{u},{i},1,pv,{1511600000 + 60 * i}\n"
                         for u in range(1, 4) for i in range(1, 9)))
  result = run_module("pipelines.build_dataset", f"--input={log}",
                      f"--output_dir={tmp_path / 'out'}", "--runner=DirectRunner",
                      "--direct_num_workers=1", "--job_endpoint=localhost:1",
                      "--allow_skewed_split", check=False, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (tmp_path / "out" / F.COMPLETE_FILE).exists()


def test_directory_lock_is_reentrant_and_released(tmp_path):
  target = str(tmp_path / "d")
  with io_utils.DirectoryLock(target) as outer:
    with io_utils.DirectoryLock(target):
      pass
    assert os.path.exists(outer.path)  # the inner exit does not release the outer lock
  assert not os.path.exists(io_utils.lock_path(target))


def _read_only_dir(path):
  """A read-only directory: a read-only tmpfs when this process may mount one (root
  ignores permission bits), else mode 0555. Returns the cleanup function."""
  path.mkdir()
  if os.geteuid() == 0:
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                              str(path)], capture_output=True, check=False)
    if mounted.returncode == 0:
      return lambda: subprocess.run(["umount", "-l", str(path)], check=False)
    pytest.skip("root without mount: a read-only directory cannot be made here")
  path.chmod(0o555)
  return lambda: path.chmod(0o755)


def test_read_only_outputs_fail_in_one_line_naming_the_path(tmp_path):
  read_only = tmp_path / "ro"
  cleanup = _read_only_dir(read_only)
  try:
    log = tmp_path / "log.csv"
    log.write_text("1,2,3,pv,1511600000\n")
    for module, args, prefix in (
        ("pipelines.build_dataset", [f"--input={log}", f"--output_dir={read_only / 'out'}"],
         "build_dataset: error:"),
        ("eta_tf.train", [f"--model_dir={read_only / 'run'}", f"--data_dir={tmp_path}"],
         "eta_tf.train: error:")):
      result = run_module(module, *args, check=False, timeout=300)
      assert result.returncode == 2, result.stderr[-2000:]
      assert "Traceback" not in result.stderr
      lines = [l for l in result.stderr.splitlines() if l.startswith(prefix)]
      assert len(lines) == 1 and str(read_only) in lines[0], result.stderr[-2000:]
      assert "writable" in lines[0]
  finally:
    cleanup()


def test_a_shard_corrupted_in_place_is_named_by_the_trainer(tmp_path, small_data_dir):
  from conftest import SMALL_TRAIN_FLAGS  # pylint: disable=g-import-not-at-top
  data = tmp_path / "data"
  shutil.copytree(small_data_dir, data)
  shard = sorted((data / F.TRAIN_SPLIT).iterdir())[0]
  raw = bytearray(shard.read_bytes())  # same size: the completion marker still matches
  middle = len(raw) // 2
  raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
  shard.write_bytes(bytes(raw))
  result = run_module("eta_tf.train", *SMALL_TRAIN_FLAGS, f"--data_dir={data}",
                      f"--model_dir={tmp_path / 'run'}", "--epochs=1", "--noexport",
                      "--verbose=0", check=False, timeout=600)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  (line,) = [l for l in result.stderr.splitlines() if l.startswith("eta_tf.train: error:")]
  assert str(shard) in line and "corrupt" in line and "--overwrite" in line, line
