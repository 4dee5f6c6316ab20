"""`python -m serving.client` refuses a bad command line or request before TensorFlow (or
gRPC) is imported: run as a user runs it, in a subprocess under `python -X importtime`,
whose import log must name neither."""
import json
import subprocess
import sys

import pytest

from eta_tf import features as F

from serving_helpers import candidates, history, samples  # noqa: E402

CLIENT_SIDE = "invalid input (checked client-side, nothing sent)"


def _run_client(*args, cwd):
  result = subprocess.run([sys.executable, "-X", "importtime", "-m", "serving.client",
                           "--server=127.0.0.1:1", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)
  imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:")}
  messages = [line for line in result.stderr.splitlines()
              if not line.startswith("import time:")]
  return result.returncode, messages, imported


def _json(obj):
  return json.dumps(obj, default=lambda value: value.tolist())  # numpy arrays and scalars


def _uneven_candidates():
  request = {**history(3), **candidates([4, 5, 6])}
  request[F.CANDIDATE_CATEGORY_ID] = [1, 2]
  return request


def _uneven_history():
  request = {**history(3), **candidates([4])}
  request[F.HIST_TIMESTAMP] = [1001, 1002]
  return request


CASES = [
    # (flags, --input content or None, exit code, expected start of the error message)
    (["--model_nme=eta"], None, 2,
     "python -m serving.client: error: unrecognized arguments: --model_nme=eta (did you "
     "mean --model_name?)"),
    (["--model_name=eta"], None, 2,
     "python -m serving.client: error: give --input (or --metadata / --status)"),
    ([], _json({**history(2), **candidates([1, 2])}), 2,
     "error: --input=req.json has candidate_item_id, an input of score_candidates, but "
     "--signature=serving_default: add --signature=score_candidates"),
    ([f"--signature={F.SCORE_CANDIDATES}"], '{"a": 1\n"b": 2}', 2,
     "error: --input=req.json: invalid JSON: Expecting ',' delimiter"),
    ([f"--signature={F.SCORE_CANDIDATES}"], "[1, 2]", 2,
     "error: --input=req.json: the JSON must be an object of input names"),
    ([f"--signature={F.SCORE_CANDIDATES}"], _json(_uneven_candidates()), 1,
     f"error: {CLIENT_SIDE}: {F.CANDIDATE_CATEGORY_ID}: candidate count 2 differs from "
     f"{F.CANDIDATE_ITEM_ID}'s 3"),
    ([f"--signature={F.SCORE_CANDIDATES}"], _json(_uneven_history()), 1,
     f"error: {CLIENT_SIDE}: {F.HIST_TIMESTAMP}: history length 2 differs from "
     f"{F.HIST_ITEM_ID}'s 3"),
    ([f"--signature={F.SCORE_CANDIDATES}"], _json(history(2)), 1,
     f"error: {CLIENT_SIDE}: {F.REQUEST_TIMESTAMP}: missing input"),
    ([], _json({**samples([2, 3], [7, 8]), F.TARGET_TIMESTAMP: [1]}), 1,
     f"error: {CLIENT_SIDE}: {F.TARGET_TIMESTAMP}: batch size 1 differs"),
    ([], _json({**samples([2, 1], [7, 8]), F.HIST_ITEM_ID: [[1, 2.5], [3]]}), 1,
     f"error: {CLIENT_SIDE}: {F.HIST_ITEM_ID}: expected int64 (integer) values, got float "
     "2.5 at index [0, 1]"),
]


@pytest.mark.parametrize("flags,content,code,message", CASES)
def test_bad_requests_fail_before_tensorflow_loads(tmp_path, flags, content, code, message):
  args = list(flags)
  if content is not None:
    (tmp_path / "req.json").write_text(content)
    args.append("--input=req.json")
  rc, messages, imported = _run_client(*args, cwd=tmp_path)
  assert rc == code, messages
  assert any(line.startswith(message) for line in messages), messages
  assert content is None or len(messages) == 1, messages  # one line, no traceback
  assert "tensorflow" not in imported and "grpc" not in imported
  assert F.__name__ in imported  # the import log is read right: the client's own modules


def test_a_valid_request_goes_on_to_load_the_client(tmp_path):
  """Control: a well-formed request passes the checks and reaches the gRPC client (nothing
  listens on port 1: UNAVAILABLE after the retries, exit 1)."""
  (tmp_path / "req.json").write_text(_json({**history(3), **candidates([4, 5])}))
  rc, messages, imported = _run_client(f"--signature={F.SCORE_CANDIDATES}",
                                       "--input=req.json", "--max_retries=0",
                                       "--timeout_s=2", cwd=tmp_path)
  assert rc == 1 and messages[-1].startswith("error: UNAVAILABLE"), messages
  assert "tensorflow" in imported and "grpc" in imported


def test_model_config_suggests_a_subcommand_flag_for_a_typo(tmp_path):
  result = subprocess.run([sys.executable, "-m", "serving.model_config", "label",
                           "--version=1", "--label=canary", "--model_nme=eta"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "python -m serving.model_config: error: unrecognized arguments: --model_nme=eta "
      "(did you mean --model_name?)")
