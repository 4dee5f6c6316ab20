"""The messages a newcomer meets on the serving path, asserted verbatim."""
import json

import numpy as np
import pytest

from eta_tf import features as F
from serving import client as client_lib
from serving import client_cli
from serving import local_server as ls
from serving import model_config as mc

from serving_helpers import candidates, expected_ctr, history, publish_version  # noqa: E402

CLIENT_SIDE = "invalid input (checked client-side, nothing sent)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """Versions 1 and 2 from a models.config with the label stable -> 1."""
  root = tmp_path_factory.mktemp("messages")
  base = str(root / "eta")
  publish_version(base, 1)
  publish_version(base, 2)
  config = str(root / "models.config")
  mc.init_config(config, "eta", base, versions=[1, 2], labels={"stable": 1})
  with ls.LocalServer(model_config_file=config, port=0, file_system_poll_wait_seconds=0,
                      allow_version_labels_for_unavailable_models=True) as srv:
    yield srv


def _target(server):
  return f"localhost:{server.port}"


def _details(error_class, fn):
  with pytest.raises(error_class) as e:
    fn()
  return e.value.details


def test_an_unknown_label_or_model_lists_what_exists(server):
  def score(model_name, label):
    return client_lib.ScoringClient(_target(server), model_name, version_label=label,
                                    timeout_s=10).score_candidates(history(1), candidates([1]))
  assert _details(client_lib.UnknownVersionLabelError, lambda: score("eta", "canary")) == (
      "Unrecognized servable version label: canary (labels of model eta: stable=1)")
  assert _details(client_lib.UnknownVersionLabelError, lambda: score("nope", "stable")) == (
      "Unrecognized servable version label: stable (no model named nope is served; "
      "models: eta)")


def test_a_model_base_path_server_says_it_has_no_labels(tmp_path):
  base = str(tmp_path / "eta")
  publish_version(base, 1)
  with ls.LocalServer(model_name="eta", model_base_path=base, port=0,
                      file_system_poll_wait_seconds=0) as server:
    client = client_lib.ScoringClient(_target(server), "eta", version_label="stable",
                                      timeout_s=10)
    assert _details(client_lib.UnknownVersionLabelError,
                    lambda: client.score_candidates(history(1), candidates([1]))) == (
        "Unrecognized servable version label: stable (model eta has no version labels: a "
        "server started with --model_base_path serves the latest version without labels; "
        "labels come from --model_config_file)")


def test_the_client_says_which_version_answered(server, tmp_path, capsys):
  stable = client_lib.ScoringClient(_target(server), "eta", version_label="stable",
                                    timeout_s=10)
  ctr, served_by = stable.score_candidates(history(2), candidates([3]), with_version=True)
  np.testing.assert_allclose(ctr, expected_ctr(1, 2, [3]), rtol=1e-6)
  assert served_by == client_lib.ServedBy("eta", 1, F.SCORE_CANDIDATES)
  latest = client_lib.ScoringClient(_target(server), "eta", timeout_s=10)
  assert latest.score(_samples([2]), with_version=True)[1] == client_lib.ServedBy(
      "eta", 2, F.SERVING_DEFAULT)
  request = _write(tmp_path / "samples.json", _samples([2]))
  assert client_cli.main([f"--server={_target(server)}", f"--input={request}"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["model_spec"] == {"name": "eta", "version": 2,
                               "signature_name": F.SERVING_DEFAULT}
  np.testing.assert_allclose(out[F.OUTPUT_CTR], expected_ctr(2, 1, [2]), rtol=1e-6)


def _samples(item_ids):
  n = len(item_ids)
  return {F.HIST_ITEM_ID: [[5]] * n, F.HIST_CATEGORY_ID: [[1]] * n,
          F.HIST_BEHAVIOR_TYPE: [[1]] * n, F.HIST_TIMESTAMP: [[100]] * n,
          F.TARGET_ITEM_ID: list(item_ids), F.TARGET_CATEGORY_ID: [1] * n,
          F.TARGET_TIMESTAMP: [200] * n}


def _write(path, obj):
  path.write_text(obj if isinstance(obj, str) else json.dumps(
      {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in obj.items()}))
  return str(path)


def _cli(server, *flags):
  return client_cli.main([f"--server={_target(server)}", "--model_name=eta", *flags])


def test_cli_messages_say_what_to_do(server, tmp_path, capsys):
  # A string where an integer belongs: the value and its index.
  bad = _samples([2])
  bad[F.HIST_ITEM_ID] = [[5, "672"]]
  path = _write(tmp_path / "string.json", bad)
  assert _cli(server, f"--input={path}") == 1
  assert capsys.readouterr().err == (
      f"error: {CLIENT_SIDE}: {F.HIST_ITEM_ID}: expected int64 (integer) values, got str "
      "'672' at index [0, 1]\n")
  # A score_candidates file without --signature: the flag to add.
  path = _write(tmp_path / "candidates.json", {**history(2), **candidates([1, 2])})
  assert _cli(server, f"--input={path}") == 2
  assert capsys.readouterr().err == (
      f"error: --input={path} has {F.CANDIDATE_ITEM_ID}, an input of {F.SCORE_CANDIDATES}, "
      f"but --signature={F.SERVING_DEFAULT}: add --signature={F.SCORE_CANDIDATES}\n")
  # Broken JSON: the file's name.
  path = _write(tmp_path / "broken.json", '{"a": 1\n"b": 2}')
  assert _cli(server, f"--input={path}") == 2
  assert capsys.readouterr().err == (f"error: --input={path}: invalid JSON: Expecting ',' "
                                     "delimiter: line 2 column 1 (char 8)\n")
  # A behavior type outside 1-4: the field and the value.
  bad = {**history(3), **candidates([1])}
  bad[F.HIST_BEHAVIOR_TYPE] = np.array([1, 4, 9])
  path = _write(tmp_path / "behavior.json", bad)
  assert _cli(server, f"--signature={F.SCORE_CANDIDATES}", f"--input={path}") == 1
  assert capsys.readouterr().err == (
      f"error: {CLIENT_SIDE}: {F.HIST_BEHAVIOR_TYPE}: value 9 at index [2] is not a "
      "behavior type (1=pv 2=cart 3=fav 4=buy; 0 = padding)\n")
  # 20,000 candidates: the server's error (its code first), saying to split the request.
  many = np.arange(1, 20_001)
  path = _write(tmp_path / "many.json", {**history(2), **candidates(many)})
  assert _cli(server, f"--signature={F.SCORE_CANDIDATES}", f"--input={path}",
              "--timeout_s=20") == 1
  assert capsys.readouterr().err == (
      "error: INVALID_ARGUMENT: request has 20000 candidates (rows), more than this "
      "server's --max_candidates=10000: split the request into requests of at most 10000 "
      "candidates\n")
