"""Named presets (eta_tf/presets.py) and the train CLI's --preset flag."""
from absl import flags
import pytest

from eta_tf import config as config_lib
from eta_tf import config_flags
from eta_tf import presets


def test_presets_pin_their_fields_and_overrides_win():
  assert presets.model_config("eta") == config_lib.ModelConfig()  # today's default
  paper = presets.model_config("eta_paper", top_k=16)
  assert (paper.signature_fields, paper.top_k) == ("item", 16)
  for name in presets.PRESETS:  # every preset builds and is recognised as itself
    assert presets.preset_of(presets.model_config(name, max_len=64)) == name
  assert "`eta_paper`" in presets.legend()


def test_flags_override_a_preset_only_when_given():
  values = flags.FlagValues()
  config_flags.define_flags(config_lib.ModelConfig, "test", flag_values=values)
  values(["prog", "--top_k=8"])
  base = presets.get("eta_paper").fields
  config = config_flags.from_flags(config_lib.ModelConfig, flag_values=values, base=base)
  assert (config.signature_fields, config.top_k) == ("item", 8)
  values(["prog", "--top_k=8", "--signature_fields=item_category"])
  config = config_flags.from_flags(config_lib.ModelConfig, flag_values=values, base=base)
  assert config.signature_fields == "item_category"
  with pytest.raises(config_lib.ConfigError, match="preset='etta'"):
    presets.get("etta")


def test_train_cli_builds_the_preset_and_names_the_run_after_it():
  from eta_tf import train  # pylint: disable=g-import-not-at-top
  try:
    train.FLAGS(["eta_tf.train", "--preset=eta_paper", "--top_k=8", "--data_dir=/d"])
    model_config, _, run = train.configs_from_flags()
  finally:
    train.FLAGS.unparse_flags()
  assert (model_config.signature_fields, model_config.top_k, run.preset) == (
      "item", 8, "eta_paper")
  assert model_config == presets.model_config("eta_paper", top_k=8)
