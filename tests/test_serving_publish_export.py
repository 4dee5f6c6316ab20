"""The real exporter losing a version race: it publishes the next free number,
and its metadata and models.config say that number. Uses the session's trained_eta."""
import json
import os

from eta_tf import release
from eta_tf import saved_model
from serving import model_config as mc
from serving import model_config_file
from serving import publish


def test_export_that_loses_the_version_race_publishes_the_next_number(
    trained_eta, small_data_dir, tmp_path, monkeypatch):
  model_dir, model = trained_eta
  export_base = str(tmp_path / "export")
  base = os.path.join(export_base, "eta")
  rival = []
  real_validate = saved_model.validate_saved_model

  def validate_while_a_rival_publishes_version_1(*args, **kwargs):
    result = real_validate(*args, **kwargs)
    tmp = publish.temp_version_dir(base, 1)  # another exporter, done first
    with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
      f.write("rival")
    rival.append(publish.publish(tmp, base, 1))
    return result
  monkeypatch.setattr(saved_model, "validate_saved_model", validate_while_a_rival_publishes_version_1)

  version_dir = release.export_trained(model_dir, export_base, "eta", data_dir=small_data_dir,
                                      trained_model=model, num_warmup_batches=2)
  assert rival == [os.path.join(base, "1")]
  assert version_dir == os.path.join(base, "2")
  with open(os.path.join(base, "1", "saved_model.pb")) as f:
    assert f.read() == "rival"  # the winner's version is untouched
  with open(os.path.join(version_dir, "assets.extra", saved_model.METADATA_FILE)) as f:
    assert json.load(f)["version"] == 2
  assert not [n for n in os.listdir(base) if n.startswith(publish.TEMP_PREFIX)]
  model_entry = mc.get_model(
      model_config_file.read_config(os.path.join(export_base, "models.config")), "eta")
  assert list(model_entry.model_version_policy.specific.versions) == [2]
  assert dict(model_entry.version_labels) == {"stable": 2, "canary": 2}
