"""The exporter under faults: a full disk (a real small tmpfs when this machine lets the
test mount one, else the same errors raised deterministically), a disk that fills up
between publishing the version and editing models.config, and a second exporter.
Whatever fails, the published versions and models.config agree and stay as they were,
and the error is one line naming the path and what to do."""
import errno
import os
import subprocess
import sys
import uuid

import pytest

from eta_tf import io_utils
from eta_tf import release
from serving import model_config
from serving import publish

SMALL = dict(max_validation_samples=256, num_warmup_batches=2)


def _mount_tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
  return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
  """A 32 MiB tmpfs (room for a few versions of the small model), or skip."""
  mount = tmp_path / "disk"
  if not _mount_tmpfs(mount, "32m"):
    pytest.skip("cannot mount a tmpfs here (needs root); the simulated test covers it")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory):
  """Writes a filler file until the file system is full; returns its path."""
  path = os.path.join(directory, f"filler-{uuid.uuid4().hex}")
  try:
    with open(path, "wb") as f:
      while True:
        f.write(b"\0" * (64 << 10))
        f.flush()
  except OSError as e:
    assert e.errno == errno.ENOSPC
  return path


def _state(export_base):
  base = os.path.join(export_base, "eta")
  config = os.path.join(export_base, release.MODELS_CONFIG_FILE)
  text = open(config).read() if os.path.exists(config) else None
  listing = sorted(os.listdir(base)) if os.path.isdir(base) else []
  return listing, text


def _assert_one_line(error, *needles):
  text = str(error.value)
  assert "\n" not in text
  for needle in needles:
    assert needle in text, (needle, text)


def test_full_tmpfs_before_the_export_and_before_models_config(
    trained_eta, small_data_dir, small_disk, monkeypatch):
  """A real full disk (tmpfs) at two points: before the SavedModel is written, and after
  the version is published but before models.config is edited (the version is taken
  back). Freed, the next export publishes version 2."""
  model_dir, model = trained_eta
  export_base = str(small_disk / "export")

  def export():
    return release.export_trained(model_dir, export_base, "eta", data_dir=small_data_dir,
                                  trained_model=model, **SMALL)
  assert export().endswith("/1")
  before = _state(export_base)
  filler = _fill(str(small_disk))
  with pytest.raises(release.ExportError) as e:
    export()
  _assert_one_line(e, "no space left", "df -h", "nothing was published")
  assert _state(export_base) == before  # no version 2, no .tmp-* dir, config as it was
  os.remove(filler)

  real_edit = model_config.add_published_version
  fillers = []

  def fill_then_edit(*args, **kwargs):  # version 2 is published; now the disk is full
    fillers.append(_fill(str(small_disk)))
    return real_edit(*args, **kwargs)
  with monkeypatch.context() as patch:
    patch.setattr(model_config, "add_published_version", fill_then_edit)
    with pytest.raises(release.ExportError) as e:
      export()
  _assert_one_line(e, "no space left", "nothing was published")
  assert fillers and _state(export_base) == before  # version 2 taken back
  os.remove(fillers[0])
  assert export().endswith("/2")


def test_simulated_enospc_while_saving_and_while_editing_models_config(
    trained_eta, small_data_dir, tmp_path, monkeypatch):
  """The same two points without a mountable tmpfs: ENOSPC raised deterministically by
  the SavedModel writer (TensorFlow's error) and by the models.config edit (OSError)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after conftest's env)
  from eta_tf import saved_model  # pylint: disable=g-import-not-at-top
  model_dir, model = trained_eta
  export_base = str(tmp_path / "export")

  def tf_disk_full(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{args[2]}/variables/variables.data-00000-of-00001.tempstate; "
        "No space left on device")

  def config_disk_full(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
  for module, name, fake, where in ((saved_model, "save_validated", tf_disk_full,
                                     export_base),
                                    (model_config, "add_published_version",
                                     config_disk_full, release.MODELS_CONFIG_FILE)):
    with monkeypatch.context() as patch:
      patch.setattr(module, name, fake)
      with pytest.raises(release.ExportError) as e:
        release.export_trained(model_dir, export_base, "eta", data_dir=small_data_dir,
                               trained_model=model, **SMALL)
    _assert_one_line(e, "no space left", where, "nothing was published")
    assert _state(export_base) == ([], None)  # nothing published, no models.config
    assert publish.list_versions(os.path.join(export_base, "eta")) == []


def test_second_exporter_is_refused_naming_the_first(trained_eta, tmp_path):
  model_dir, _ = trained_eta
  base = tmp_path / "export" / "eta"
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from eta_tf.io_utils import DirectoryLock; "
       "DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
       str(base)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    result = subprocess.run(
        [sys.executable, "-m", "eta_tf.export", f"--model_dir={model_dir}",
         f"--export_base={tmp_path / 'export'}", "--model_name=eta"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [l for l in result.stderr.splitlines() if l.startswith("eta_tf.export: error:")]
    assert len(errors) == 1 and f"pid {holder.pid}" in errors[0], result.stderr[-2000:]
    assert "export base" in errors[0] and str(base) in errors[0]
    assert not base.exists() or not os.listdir(base)
  finally:
    holder.kill()
    holder.wait()
  assert io_utils.DirectoryLock(str(base)).acquire().took_over  # a dead holder's lock
