"""serving.request_from_log: a user's raw Taobao-format log rows -> a score_candidates
request that the client's own checks accept, with the history the training samples see
(behaviors strictly before the request, sorted, exact duplicates removed); a bad row of
the user stops it naming the line, the field and the value. No TensorFlow, no Beam."""
import json
import subprocess
import sys

import numpy as np
import pytest

from eta_tf import features as F
from serving import client_cli
from serving import request_from_log as rfl

# The documented behavior codes (eta_tf.features: 1=pv 2=cart 3=fav 4=buy), spelled out.
CODES = {"pv": 1, "cart": 2, "fav": 3, "buy": 4}
USER = 42
LOG = [
    "7,500,50,pv,1511500000",        # another user
    f"{USER},103,12,buy,1511600300",
    f"{USER},101,11,pv,1511600100",
    f"{USER},102,11,cart,1511600200",
    f"{USER},101,11,pv,1511600100",  # exact duplicate: once in the history
    f"{USER},104,13,fav,1511600400",
    "",                              # empty line
    f"{USER},105,13,pv,1511600500",
    "9,x,1,click,0",                 # another user's bad row: not read
    f"{USER},106,14,pv,1511600600",
]


def _write(tmp_path, lines, name="behaviors.csv"):
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _reference(lines, user, before):
  rows = sorted({tuple(line.split(",")) for line in lines if line.startswith(f"{user},")},
                key=lambda r: (int(r[4]), int(r[1]), int(r[2]), CODES[r[3]]))
  rows = [r for r in rows if int(r[4]) < before]
  return {F.HIST_ITEM_ID: [int(r[1]) for r in rows],
          F.HIST_CATEGORY_ID: [int(r[2]) for r in rows],
          F.HIST_BEHAVIOR_TYPE: [CODES[r[3]] for r in rows],
          F.HIST_TIMESTAMP: [int(r[4]) for r in rows]}


@pytest.mark.parametrize("extra,before", [([], 1511600601),
                                          (["--request_timestamp=1511600400"], 1511600400)])
def test_log_rows_to_a_request_the_client_accepts(tmp_path, capsys, extra, before):
  log = _write(tmp_path, LOG)
  out = str(tmp_path / "request.json")
  assert rfl.main([f"--log={log}", f"--user_id={USER}", "--candidates=900:9,901:11",
                   f"--output={out}", *extra]) == 0
  with open(out) as f:
    request = json.load(f)
  expected = _reference(LOG, USER, before)
  assert request == {**expected, F.REQUEST_TIMESTAMP: before,
                     F.CANDIDATE_ITEM_ID: [900, 901], F.CANDIDATE_CATEGORY_ID: [9, 11]}
  # The client command line's own checks (signature of the file, then the inputs).
  client_cli._check_signature(request, out, F.SCORE_CANDIDATES)
  client_cli._check_request(request, F.SCORE_CANDIDATES)
  assert capsys.readouterr().err == (
      f"{len(expected[F.HIST_ITEM_ID])} behaviors of user {USER} before {before}, "
      "2 candidates\n")


def test_max_len_keeps_the_most_recent_and_gzip_logs_are_read(tmp_path, capsys):
  import gzip  # pylint: disable=g-import-not-at-top
  path = tmp_path / "behaviors.csv.gz"
  with gzip.open(path, "wt") as f:
    f.write("\n".join(LOG) + "\n")
  assert rfl.main([f"--log={path}", f"--user_id={USER}", "--candidates=900:9",
                   "--max_len=2"]) == 0
  request = json.loads(capsys.readouterr().out)
  assert request[F.HIST_ITEM_ID] == [105, 106]
  assert request[F.HIST_BEHAVIOR_TYPE] == [1, 1]


@pytest.mark.parametrize("row,message", [
    (f"{USER},1x,3,pv,1511600000", "item_id='1x': not an integer (non_integer_field"),
    (f"{USER},1,0,pv,1511600000", "category_id=0: ids are positive (0 is padding) "
                                  "(non_positive_id"),
    (f"{USER},1,3,click,1511600000", "behavior_type='click': not one of pv, cart, fav, buy "
                                     "(unknown_behavior_type"),
    (f"{USER},1,3,pv,1511600000000", "timestamp=1511600000000: not unix seconds in "
                                     "[1, 4102444800) (timestamp_out_of_range"),
    (f"{USER},1,3,1511600000", "4 columns, expected 5 (user_id,item_id,category_id,"
                               "behavior_type,timestamp) (wrong_column_count"),
    ("u42,1,3,pv,1511600000", "user_id='u42': not an integer (non_integer_field"),
])
def test_a_bad_row_names_the_line_field_and_value(tmp_path, capsys, row, message):
  log = _write(tmp_path, LOG[:3] + [row] + LOG[3:])
  assert rfl.main([f"--log={log}", f"--user_id={USER}", "--candidates=900:9"]) == 2
  assert capsys.readouterr().err == f"error: --log={log}: line 4: {message}; row: {row})\n"


def test_usage_errors(tmp_path, capsys):
  log = _write(tmp_path, LOG)
  assert rfl.main([f"--log={log}", "--user_id=5", "--candidates=900:9"]) == 2
  assert capsys.readouterr().err == f"error: --log={log} has no row of --user_id=5\n"
  for candidates, message in [("900", "'900' is not item_id:category_id"),
                              ("900:0", "'900:0': ids are positive (0 is padding)")]:
    with pytest.raises(SystemExit) as e:
      rfl.main([f"--log={log}", f"--user_id={USER}", f"--candidates={candidates}"])
    assert e.value.code == 2
    assert f"error: --candidates: {message}" in capsys.readouterr().err


def test_runs_without_tensorflow_or_beam(tmp_path):
  log = _write(tmp_path, LOG)
  result = subprocess.run([sys.executable, "-X", "importtime", "-m", "serving.request_from_log",
                           f"--log={log}", f"--user_id={USER}", "--candidates=900:9"],
                          capture_output=True, text=True, timeout=60, check=True)
  imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:")}
  assert "tensorflow" not in imported and "apache_beam" not in imported
  assert "pipelines.parsing" in imported
  assert np.array_equal(json.loads(result.stdout)[F.HIST_ITEM_ID],
                        _reference(LOG, USER, 1511600601)[F.HIST_ITEM_ID])
