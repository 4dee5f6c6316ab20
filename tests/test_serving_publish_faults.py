"""Faults, races and hostile input for serving.publish, serving.model_config and the
exporter's models.config edit. No TensorFlow import: fast.

Race windows are widened by fault injection (a sleep between the read and the write of an
edit, a barrier before the rename), so each test fails reliably without the fix.
"""
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from serving import model_config as mc
from serving import model_config_cli as mc_cli
from serving import model_config_file
from serving import names
from serving import publish

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO}


def _fake_version(path):
  os.makedirs(os.path.join(path, "variables"), exist_ok=True)
  for name in ("saved_model.pb", "variables/variables.index"):
    with open(os.path.join(path, name), "wb") as f:
      f.write(b"x")
  return path


def _wait_for(predicate, timeout_s=60.0):
  deadline = time.monotonic() + timeout_s
  while not predicate():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.01)


# --- models.config: 20 concurrent editors (threads and processes) ------------------------------
# Every editor sleeps between reading and writing the file (inside format_config, which runs
# after the read): without a lock nearly every concurrent edit is lost.
_EDITOR = r"""
import os, sys, time
from serving import model_config as mc
from serving import model_config_file
slow = model_config_file.format_config
model_config_file.format_config = lambda config: (time.sleep(0.02), slow(config))[1]
path, export_base, version, ready, go = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
  time.sleep(0.005)
mc.add_version(path, "eta", int(version), export_base)
mc.set_label(path, "eta", "l" + version, int(version), export_base)
"""


def test_twenty_concurrent_editors_keep_every_change(tmp_path, monkeypatch):
  export_base = str(tmp_path / "export")
  for v in range(1, 22):
    _fake_version(os.path.join(export_base, "eta", str(v)))
  path = str(tmp_path / "models.config")
  mc.init_config(path, "eta", os.path.join(export_base, "eta"), versions=[21],
                 labels={"stable": 21})
  go = str(tmp_path / "go")
  processes = [subprocess.Popen(
      [sys.executable, "-c", _EDITOR, path, export_base, str(v), str(tmp_path / f"ready{v}"),
       go], env=ENV, cwd=REPO, stderr=subprocess.PIPE, text=True) for v in range(11, 21)]

  # Slows every write (serving.model_config_file, where the locked edit lives) to widen races.
  slow = model_config_file.format_config
  monkeypatch.setattr(model_config_file, "format_config", lambda config: (time.sleep(0.02), slow(config))[1])
  errors = []

  def thread_editor(version):
    try:
      _wait_for(lambda: os.path.exists(go))
      mc.add_version(path, "eta", version, export_base)
      mc.set_label(path, "eta", f"l{version}", version, export_base)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=thread_editor, args=(v,)) for v in range(1, 11)]
  for t in threads:
    t.start()
  _wait_for(lambda: all(os.path.exists(tmp_path / f"ready{v}") for v in range(11, 21)))
  open(go, "w").close()
  for t in threads:
    t.join()
  for p in processes:
    assert p.wait(timeout=60) == 0, p.stderr.read()
  assert not errors, errors
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert list(model.model_version_policy.specific.versions) == list(range(1, 22))
  assert dict(model.version_labels) == {"stable": 21, **{f"l{v}": v for v in range(1, 21)}}


def test_edit_keeps_the_file_mode_and_a_new_file_gets_0644(tmp_path):
  export_base = str(tmp_path / "export")
  for v in (1, 2):
    _fake_version(os.path.join(export_base, "eta", str(v)))
  path = str(tmp_path / "models.config")
  mc.init_config(path, "eta", os.path.join(export_base, "eta"), versions=[1])
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
  os.chmod(path, 0o600)
  mc.add_version(path, "eta", 2, export_base)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
  mc.set_label(path, "eta", "canary", 2, export_base)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
  assert mc.get_label(path, "eta", "canary") == 2


def test_a_refused_edit_writes_nothing_and_releases_the_lock(tmp_path):
  path = str(tmp_path / "models.config")
  mc.init_config(path, "eta", str(tmp_path / "eta"), versions=[1])
  before = open(path).read()
  with pytest.raises(model_config_file.VersionNotFoundError):
    mc.add_version(path, "eta", 2)
  assert open(path).read() == before
  mc.init_config(path, "other", str(tmp_path / "other"))  # the lock was released
  listed = [m.name for m in model_config_file.read_config(path).model_config_list.config]
  assert listed == ["eta", "other"]


# --- the exporter's change: one edit ------------------------------------------------------------
def _count_writes(monkeypatch):
  writes = []
  # The locked edit (serving.model_config_file.edit_config) writes through its own module.
  real = model_config_file.write_config
  monkeypatch.setattr(model_config_file, "write_config",
                      lambda *a, **k: (writes.append(a[1]), real(*a, **k))[1])
  return writes


def test_export_models_config_change_is_one_edit(tmp_path, monkeypatch):
  from eta_tf import release  # pylint: disable=g-import-not-at-top  (loads TensorFlow)
  export_base = str(tmp_path / "export")
  base = os.path.join(export_base, "eta")
  for v in (1, 2, 3):
    _fake_version(os.path.join(base, str(v)))
  path = os.path.join(export_base, release.MODELS_CONFIG_FILE)
  writes = _count_writes(monkeypatch)

  release._update_models_config(export_base, "eta", base, 1, "canary")  # first: a new entry
  assert writes == [path]
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert model.base_path == os.path.abspath(base)
  assert dict(model.version_labels) == {"stable": 1, "canary": 1}

  release._update_models_config(export_base, "eta", base, 2, "shadow")  # a new label: set
  assert writes == [path] * 2
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert list(model.model_version_policy.specific.versions) == [1, 2]
  assert dict(model.version_labels) == {"stable": 1, "canary": 1, "shadow": 2}

  note = mc.add_published_version(path, "eta", base, 3, "canary")  # existing label: kept
  assert writes == [path] * 3
  assert note == (f"models.config: version 3 added; once it is AVAILABLE, move the label "
                  f"with: python -m serving.model_config label --model_config_file={path} "
                  f"--model_name=eta --label=canary --version=3")
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert list(model.model_version_policy.specific.versions) == [1, 2, 3]
  assert model.version_labels["canary"] == 1


# --- publish: durability, races, stale temp dirs --------------------------------------------------
def test_publish_fsyncs_every_file_and_directory_before_the_rename(tmp_path, monkeypatch):
  base = str(tmp_path / "eta")
  tmp = _fake_version(publish.temp_version_dir(base, 1))
  _fake_version(os.path.join(tmp, "assets.extra"))
  synced = []
  real_fsync = os.fsync
  monkeypatch.setattr(os, "fsync", lambda fd: (
      synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
  at_rename = []
  real_rename = publish._rename_noreplace
  monkeypatch.setattr(publish, "_rename_noreplace",
                      lambda src, dst: (at_rename.extend(synced), real_rename(src, dst))[1])
  tree = [tmp] + [os.path.join(d, n) for d, dirs, files in os.walk(tmp) for n in dirs + files]
  assert len(tree) == 8
  publish.publish(tmp, base, 1)
  assert sorted(set(at_rename)) == sorted(tree)  # all of the tree, before the rename
  assert synced[-1] == os.path.abspath(base)  # then the new directory entry


def test_publish_reports_a_failed_fsync_and_publishes_nothing(tmp_path, monkeypatch):
  base = str(tmp_path / "eta")
  tmp = _fake_version(publish.temp_version_dir(base, 1))

  def failing_fsync(fd):
    raise OSError(5, "Input/output error")
  monkeypatch.setattr(os, "fsync", failing_fsync)
  with pytest.raises(publish.PublishError, match="cannot make the version durable"):
    publish.publish(tmp, base, 1)
  assert publish.list_versions(base) == [] and os.path.isdir(tmp)


# Four exporters: each picks next_version() (all pick 1), writes its version, waits until
# all are ready, then publishes and records it in models.config, like eta_tf.export does.
_EXPORTER = r"""
import os, sys, time
from serving import model_config as mc, publish
base, config, ready, go = sys.argv[1:]
version = publish.next_version(base)
tmp = publish.temp_version_dir(base, version)
os.makedirs(os.path.join(tmp, "variables"))
open(os.path.join(tmp, "saved_model.pb"), "w").write(str(os.getpid()))
open(ready, "w").close()
while not os.path.exists(go):
  time.sleep(0.005)
path, version = publish.publish_next(tmp, base, version)
mc.add_published_version(config, "eta", base, version, "canary")
print(version, open(os.path.join(path, "saved_model.pb")).read())
"""


def test_four_racing_exporters_publish_four_distinct_versions(tmp_path):
  base = str(tmp_path / "export" / "eta")
  config = str(tmp_path / "export" / "models.config")
  go = str(tmp_path / "go")
  processes = [subprocess.Popen(
      [sys.executable, "-c", _EXPORTER, base, config, str(tmp_path / f"ready{i}"), go],
      env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(4)]
  _wait_for(lambda: all(os.path.exists(tmp_path / f"ready{i}") for i in range(4)))
  open(go, "w").close()
  results = []
  for p in processes:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    version, pid = out.split()
    results.append((int(version), int(pid)))
  assert sorted(v for v, _ in results) == [1, 2, 3, 4]
  assert sorted(pid for _, pid in results) == sorted(p.pid for p in processes)
  assert publish.list_versions(base, complete_only=True) == [1, 2, 3, 4]
  assert not [n for n in os.listdir(base) if n.startswith(publish.TEMP_PREFIX)]
  model = mc.get_model(model_config_file.read_config(config), "eta")
  assert list(model.model_version_policy.specific.versions) == [1, 2, 3, 4]


def test_publish_next_stamps_the_version_it_finally_gets(tmp_path):
  base = str(tmp_path / "eta")
  _fake_version(os.path.join(base, "1"))
  _fake_version(os.path.join(base, "2"))
  tmp = _fake_version(publish.temp_version_dir(base, 1))
  stamped = []
  path, version = publish.publish_next(tmp, base, 1, before_rename=stamped.append)
  assert (path, version, stamped) == (os.path.join(base, "3"), 3, [1, 3])


def test_stale_temp_dirs_are_removed_only_when_their_owner_is_gone(tmp_path):
  base = str(tmp_path / "eta")
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    stale = [os.path.join(base, f".tmp-3-{dead.pid}-ab12"), os.path.join(base, f".tmp-4-{dead.pid}")]
    kept = [os.path.join(base, f".tmp-5-{alive.pid}-cd34"),
            os.path.join(base, f".tmp-6-{os.getpid()}-ef56"),
            os.path.join(base, ".tmp-notes"), os.path.join(base, "1")]
    for path in stale + kept:
      _fake_version(path)
    mine = publish.temp_version_dir(base, 7)  # an export starting cleans up first
    assert not any(os.path.exists(p) for p in stale)
    assert all(os.path.exists(p) for p in kept + [mine])
    assert publish.clean_stale_temp_dirs(base) == []
  finally:
    alive.kill()
    alive.wait()
  assert publish.clean_stale_temp_dirs(base) == [kept[0]]


# --- names, versions, labels: validated everywhere ----------------------------------------------
BAD_NAMES = ["/etc", "..", ".", "", "a\nb", "a/b", "eta ", "-x"]
BAD_VERSIONS = [-1, 0, "x", "1.5", True, 2**63, "9" * 5000]
BAD_LABELS = ["", "a\nb", "can-ary", "a b", "stable\n", "../x"]


def _name_message(value):
  return (f"model_name {value!r} is not a valid model name: use letters, digits, '_', '-' and "
          "'.', starting with a letter or digit (one directory name, at most 255 characters)")


@pytest.mark.parametrize("value", BAD_NAMES)
def test_bad_model_names_are_refused_everywhere(tmp_path, value):
  path = str(tmp_path / "models.config")
  mc.init_config(path, "eta", str(tmp_path / "eta"), versions=[1])
  before = open(path).read()
  for edit in (lambda: mc.init_config(path, value, "/models/x"),
               lambda: mc.add_version(path, value, 1),
               lambda: mc.set_label(path, value, "canary", 1),
               lambda: mc.promote(path, value),
               lambda: mc.add_published_version(path, value, "/models/x", 1)):
    with pytest.raises(model_config_file.InvalidNameError) as e:
      edit()
    assert str(e.value) == _name_message(value)
  assert open(path).read() == before
  config = model_config_file.parse_config(
      'model_config_list { config { name: "x" base_path: "/m" } }')
  config.model_config_list.config[0].name = value
  with pytest.raises(model_config_file.ModelConfigError):
    model_config_file.write_config(config, path)  # nor can a config carrying one be written


@pytest.mark.parametrize("value", BAD_VERSIONS)
def test_bad_versions_are_refused_everywhere(tmp_path, value):
  path = str(tmp_path / "models.config")
  base = str(tmp_path / "eta")
  mc.init_config(path, "eta", base, versions=[1])
  message = (f"version {value!r} is not valid: a version is a positive integer "
             "(1 to 9223372036854775807)")
  for edit in (lambda: mc.add_version(path, "eta", value),
               lambda: mc.remove_version(path, "eta", value),
               lambda: mc.set_label(path, "eta", "canary", value),
               lambda: mc.add_published_version(path, "eta", base, value)):
    with pytest.raises(model_config_file.InvalidNameError) as e:
      edit()
    assert str(e.value) == message
  with pytest.raises(publish.PublishError) as e:
    publish.temp_version_dir(base, value)
  assert str(e.value) == message
  tmp = _fake_version(publish.temp_version_dir(base, 1))
  with pytest.raises(publish.PublishError) as e:
    publish.publish(tmp, base, value)
  assert str(e.value) == message


@pytest.mark.parametrize("value", BAD_LABELS)
def test_bad_labels_are_refused_everywhere(tmp_path, value):
  path = str(tmp_path / "models.config")
  base = _fake_version(str(tmp_path / "eta" / "1"))
  mc.init_config(path, "eta", os.path.dirname(base), versions=[1], labels={"stable": 1})

  def message(field):
    return (f"{field} {value!r} is not a valid version label: use letters, digits and '_' "
            "only (TF Serving's rule)")
  edits = [(lambda: mc.set_label(path, "eta", value, 1), "label"),
           (lambda: mc.promote(path, "eta", value, "stable"), "from_label"),
           (lambda: mc.promote(path, "eta", "stable", value), "to_label"),
           (lambda: mc.init_config(path, "eta", "/m", [1], {value: 1}), "labels")]
  if value:  # the exporter's empty label means "no label"
    edits.append((lambda: mc.add_published_version(path, "eta", "/m", 1, value), "label"))
  for edit, field in edits:
    with pytest.raises(model_config_file.InvalidNameError) as e:
      edit()
    assert str(e.value) == message(field)


def test_cli_usage_errors_name_the_field_and_exit_2(tmp_path, capsys):
  path = str(tmp_path / "models.config")
  mc.init_config(path, "eta", str(tmp_path / "eta"), versions=[1])
  capsys.readouterr()
  assert mc_cli.main(["add_version", f"--model_config_file={path}", "--model_name=/etc",
                      "--version=1"]) == 2
  assert capsys.readouterr().err == f"error: {_name_message('/etc')}\n"
  assert mc_cli.main(["label", f"--model_config_file={path}", "--label=a.b", "--version=1"]) == 2
  assert capsys.readouterr().err == ("error: label 'a.b' is not a valid version label: use "
                                     "letters, digits and '_' only (TF Serving's rule)\n")
  assert mc_cli.main(["remove_version", f"--model_config_file={path}", "--version=-1"]) == 2
  assert capsys.readouterr().err == ("error: version -1 is not valid: a version is a positive "
                                     "integer (1 to 9223372036854775807)\n")


def test_export_refuses_bad_names_before_any_work(tmp_path):
  from eta_tf import release  # pylint: disable=g-import-not-at-top
  export_base = str(tmp_path / "export")
  with pytest.raises(names.InvalidNameError) as e:
    release.export_trained(str(tmp_path / "no_model"), export_base, "../etc")
  assert str(e.value) == _name_message("../etc")
  with pytest.raises(names.InvalidNameError, match="label 'a\\\\nb' is not a valid"):
    release.export_trained(str(tmp_path / "no_model"), export_base, "eta", label="a\nb")
  assert not os.path.exists(export_base)


def test_names_accept_what_tf_serving_accepts():
  assert names.check_model_name("eta_v2.1-x") == "eta_v2.1-x"
  assert names.check_version("12") == 12 and names.check_version(2**63 - 1) == 2**63 - 1
  assert names.check_label("canary_2") == "canary_2"


@pytest.mark.parametrize("flag, message", [
    ("--model_name=/etc", _name_message("/etc").replace("model_name", "--model_name", 1)),
    ("--label=can-ary", "--label 'can-ary' is not a valid version label: use letters, digits "
                        "and '_' only (TF Serving's rule)")])
def test_train_refuses_a_bad_export_name_before_training(tmp_path, flag, message):
  result = subprocess.run([sys.executable, "-m", "eta_tf.train", flag,
                           f"--model_dir={tmp_path / 'run'}"], env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == f"eta_tf.train: error: {message}"
  assert not os.path.exists(tmp_path / "run")
