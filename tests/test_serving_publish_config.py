"""serving.publish and serving.model_config (no TensorFlow import: fast)."""
import os
import subprocess
import sys

import pytest

from serving import model_config as mc
from serving import model_config_cli as mc_cli
from serving import model_config_file
from serving import publish

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_version(path):
  os.makedirs(path, exist_ok=True)
  open(os.path.join(path, "saved_model.pb"), "wb").close()
  return path


# --- publish ---------------------------------------------------------------------------------
def test_next_version_ignores_temp_and_non_integer_dirs(tmp_path):
  base = str(tmp_path / "eta")
  assert publish.next_version(base) == 1
  for name in ("1", "3", ".tmp-9-123", "7a", "latest"):
    os.makedirs(os.path.join(base, name))
  open(os.path.join(base, "12"), "w").close()  # a file, not a version
  assert publish.list_versions(base) == [1, 3]
  assert publish.next_version(base) == 4


def test_publish_renames_atomically_and_never_overwrites(tmp_path):
  base = str(tmp_path / "eta")
  tmp = publish.temp_version_dir(base, 1)
  assert os.path.basename(tmp).startswith(publish.TEMP_PREFIX)
  assert publish.list_versions(base) == []  # TF Serving never sees the temp dir
  _fake_version(tmp)
  assert publish.publish(tmp, base, 1) == os.path.join(base, "1")
  assert not os.path.exists(tmp)
  assert publish.list_versions(base, complete_only=True) == [1]

  again = _fake_version(publish.temp_version_dir(base, 1))
  with pytest.raises(publish.VersionExistsError, match="refusing to overwrite"):
    publish.publish(again, base, 1)
  assert os.path.exists(again)  # nothing moved
  os.makedirs(os.path.join(base, "2"))  # an empty dir: rename(2) alone would replace it
  with pytest.raises(publish.VersionExistsError):
    publish.publish(again, base, 2)


def test_publish_refuses_incomplete_or_integer_named_dirs(tmp_path):
  base = str(tmp_path / "eta")
  empty = publish.temp_version_dir(base, 5)
  with pytest.raises(publish.PublishError, match="no saved_model.pb"):
    publish.publish(empty, base, 5)
  integer = _fake_version(str(tmp_path / "7"))
  with pytest.raises(publish.PublishError, match="integer name"):
    publish.publish(integer, base, 7)
  with pytest.raises(publish.PublishError) as e:
    publish.publish(_fake_version(empty), base, -1)
  assert str(e.value) == ("version -1 is not valid: a version is a positive integer "
                          "(1 to 9223372036854775807)")


# --- model_config ------------------------------------------------------------------------------
@pytest.fixture
def setup(tmp_path):
  export_base = str(tmp_path / "export")
  base = os.path.join(export_base, "eta")
  for v in (1, 2):
    _fake_version(os.path.join(base, str(v)))
  path = str(tmp_path / "models.config")
  mc.init_config(path, "eta", base, versions=[1], labels={"stable": 1})
  return path, export_base, base


def test_config_roundtrip_and_labels(setup):
  path, export_base, _ = setup
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert list(model.model_version_policy.specific.versions) == [1]
  assert dict(model.version_labels) == {"stable": 1}
  mc.add_version(path, "eta", 2, export_base)
  mc.set_label(path, "eta", "canary", 2, export_base)
  assert mc.get_label(path, "eta", "canary") == 2
  mc.promote(path, "eta", "canary", "stable", export_base)
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert dict(model.version_labels) == {"stable": 2, "canary": 2}
  assert list(model.model_version_policy.specific.versions) == [1, 2]
  mc.remove_version(path, "eta", 1)
  with pytest.raises(model_config_file.ModelConfigError, match="still labelled canary, stable"):
    mc.remove_version(path, "eta", 2)


def test_set_label_refuses_missing_version_dir(setup):
  path, export_base, base = setup
  before = open(path).read()
  with pytest.raises(model_config_file.VersionNotFoundError) as e:
    mc.set_label(path, "eta", "canary", 9, export_base)
  assert "canary" in str(e.value) and "version 9" in str(e.value)
  os.makedirs(os.path.join(base, "3"))  # half-written: no saved_model.pb
  with pytest.raises(model_config_file.VersionNotFoundError, match="holds no saved_model.pb"):
    mc.add_version(path, "eta", 3, export_base)
  with pytest.raises(model_config_file.VersionNotServedError, match="add_version it first"):
    mc.set_label(path, "eta", "canary", 2, export_base)  # exists, but not in the policy
  with pytest.raises(model_config_file.UnknownModelError):
    mc.set_label(path, "nope", "canary", 1, export_base)
  with pytest.raises(model_config_file.UnknownLabelError):
    mc.promote(path, "eta", "canary", "stable")
  assert open(path).read() == before  # refused edits leave the file alone


def test_add_version_from_latest_policy_keeps_served_versions(tmp_path):
  base = str(tmp_path / "eta")
  for v in (1, 2, 3):
    _fake_version(os.path.join(base, str(v)))
  path = str(tmp_path / "models.config")
  mc.init_config(path, "eta", base, latest=2)
  assert mc.served_versions(mc.get_model(model_config_file.read_config(path), "eta")) == [2, 3]
  mc.add_version(path, "eta", 1)
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert list(model.model_version_policy.specific.versions) == [1, 2, 3]


def test_policy_versions_follow_tf_serving_rules():
  from tensorflow_serving.config import file_system_storage_path_source_pb2 as fs
  policy = fs.FileSystemStoragePathSourceConfig.ServableVersionPolicy()
  assert mc.policy_versions(policy, [3, 1, 2]) == [3]  # unset: latest 1
  policy.latest.num_versions = 2
  assert mc.policy_versions(policy, [3, 1, 2]) == [2, 3]
  policy.all.SetInParent()
  assert mc.policy_versions(policy, [3, 1, 2]) == [1, 2, 3]
  policy.specific.versions.extend([2, 7])
  assert mc.policy_versions(policy, [3, 1, 2]) == [2]
  assert mc.policy_versions(policy, []) == []


def test_duplicate_models_are_rejected(tmp_path):
  config = model_config_file.parse_config(
      'model_config_list { config { name: "a" base_path: "/x" } '
      'config { name: "a" base_path: "/y" } }')
  with pytest.raises(model_config_file.ModelConfigError, match="multiple times"):
    model_config_file.write_config(config, str(tmp_path / "models.config"))


def test_cli_label_and_promote(setup, capsys):
  path, export_base, _ = setup
  assert mc_cli.main(["add_version", f"--model_config_file={path}", "--model_name=eta",
                      "--version=2", f"--export_base={export_base}"]) == 0
  assert mc_cli.main(["label", f"--model_config_file={path}", "--model_name=eta",
                      "--label=canary", "--version=2", f"--export_base={export_base}"]) == 0
  assert mc_cli.main(["promote", f"--model_config_file={path}", "--model_name=eta",
                      "--from_label=canary", "--to_label=stable"]) == 0
  assert mc.get_label(path, "eta", "stable") == 2
  capsys.readouterr()
  assert mc_cli.main(["label", f"--model_config_file={path}", "--model_name=eta",
                      "--label=canary", "--version=8", f"--export_base={export_base}"]) == 1
  err = capsys.readouterr().err
  assert "canary" in err and "version 8" in err


def test_cli_help_runs_as_a_module():
  out = subprocess.run([sys.executable, "-m", "serving.model_config", "promote", "--help"],
                       cwd=REPO, capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": REPO}).stdout
  assert "--from_label" in out and "--to_label" in out


# --- the docker config, messages and the header --------------------------------------
DOCKER_CONFIG = os.path.join(REPO, "docker", "models.config")


@pytest.fixture
def docker_config(tmp_path):
  """A copy of the tracked docker/models.config and a host export base with versions 1, 2."""
  export_base = str(tmp_path / "export")
  for v in (1, 2):
    _fake_version(os.path.join(export_base, "eta", str(v)))
  path = str(tmp_path / "models.config")
  with open(DOCKER_CONFIG) as src, open(path, "w") as dst:
    dst.write(src.read())
  return path, export_base


def test_docker_config_edits_keep_the_header_and_promote_says_to_give_export_base(
    docker_config, capsys):
  path, export_base = docker_config
  header = model_config_file.header_comments(open(DOCKER_CONFIG).read())
  assert len(header.splitlines()) == 11
  m = [f"--model_config_file={path}", "--model_name=eta"]
  assert mc_cli.main(["add_version", *m, "--version=2", f"--export_base={export_base}"]) == 0
  assert mc_cli.main(["label", *m, "--label=canary", "--version=2",
                      f"--export_base={export_base}"]) == 0
  capsys.readouterr()
  assert mc_cli.main(["promote", *m, "--from_label=canary", "--to_label=stable"]) == 1
  assert capsys.readouterr().err == (
      "error: label 'stable': version 2 of model eta: /models/eta/2 is not there (checked "
      "under the config's base_path /models/eta, the path the server sees; if the server "
      "runs in a container, give --export_base=<the export root on this machine>, e.g. "
      "--export_base=runs/export)\n")
  assert mc_cli.main(["promote", *m, "--from_label=canary", "--to_label=stable",
                      f"--export_base={export_base}"]) == 0
  text = open(path).read()
  assert text.startswith(header) and text[len(header):].startswith("model_config_list {")
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert model.base_path == "/models/eta"
  assert dict(model.version_labels) == {"stable": 2, "canary": 2}


def test_add_version_of_a_listed_version_says_so_and_changes_nothing(docker_config, capsys):
  path, export_base = docker_config
  before = open(path).read()
  capsys.readouterr()
  assert mc_cli.main(["add_version", f"--model_config_file={path}", "--model_name=eta",
                      "--version=1", f"--export_base={export_base}"]) == 0
  assert capsys.readouterr().err == (
      f"add_version: version 1 of model eta is already listed in {path} (versions: 1); "
      "nothing changed\n")
  assert open(path).read() == before
  with pytest.raises(model_config_file.VersionAlreadyListedError):
    mc.add_version(path, "eta", 1, export_base)


def test_show_takes_model_name(docker_config, capsys):
  path, _ = docker_config
  mc.init_config(path, "other", "/models/other")
  capsys.readouterr()
  assert mc_cli.main(["show", f"--model_config_file={path}", "--model_name=eta"]) == 0
  shown = model_config_file.parse_config(capsys.readouterr().out)
  assert [m.name for m in shown.model_config_list.config] == ["eta"]
  assert mc_cli.main(["show", f"--model_config_file={path}"]) == 0
  shown = model_config_file.parse_config(capsys.readouterr().out)
  assert [m.name for m in shown.model_config_list.config] == ["eta", "other"]
  assert mc_cli.main(["show", f"--model_config_file={path}", "--model_name=nope"]) == 1
  assert capsys.readouterr().err == ("error: model 'nope' is not in the config (models: "
                                     "eta, other)\n")


def test_promote_help_names_export_base():
  out = subprocess.run([sys.executable, "-m", "serving.model_config", "promote", "--help"],
                       cwd=REPO, capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": REPO}).stdout
  assert "--export_base=runs/export for docker/models.config" in " ".join(out.split())
  epilog = subprocess.run([sys.executable, "-m", "serving.model_config", "--help"],
                          cwd=REPO, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": REPO}).stdout
  assert ("python -m serving.model_config promote $M --from_label=canary --to_label=stable "
          "\\\n      --export_base=runs/export") in epilog


def test_readme_docker_canary_commands_work_verbatim(tmp_path):
  """The README's `<!-- docker-canary -->` block, run by bash on a copy of docker/ with a host
  export base holding versions 1 and 2 (the `serving.client --status` line needs a live
  TF Serving and is the only one left out)."""
  import re  # pylint: disable=g-import-not-at-top
  with open(os.path.join(REPO, "README.md")) as f:
    block = re.search(r"<!-- docker-canary -->\s*\n```bash\n(.*?)\n```", f.read(),
                      re.DOTALL).group(1)
  lines = [line for line in block.replace("\\\n", " ").splitlines()
           if not line.startswith("python -m serving.client")]
  assert sum(line.startswith("python -m serving.model_config") for line in lines) == 4
  os.makedirs(tmp_path / "docker")
  with open(DOCKER_CONFIG) as src, open(tmp_path / "docker" / "models.config", "w") as dst:
    dst.write(src.read())
  for v in (1, 2):
    _fake_version(str(tmp_path / "runs" / "export" / "eta" / str(v)))
  result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(lines)],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stderr
  path = str(tmp_path / "docker" / "models.config")
  model = mc.get_model(model_config_file.read_config(path), "eta")
  assert model.base_path == "/models/eta"
  assert list(model.model_version_policy.specific.versions) == [1, 2]
  assert dict(model.version_labels) == {"stable": 2, "canary": 2}
  assert open(path).read().startswith(model_config_file.header_comments(open(DOCKER_CONFIG).read()))
