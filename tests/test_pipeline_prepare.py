"""`python -m pipelines.prepare`: --help, usage errors and the reuse of a complete data dir
(the full run is in tests/test_train_output.py, whose data it prepares)."""
import logging

import pytest

from eta_tf import features as F
from pipelines import prepare


@pytest.fixture(autouse=True)
def restore_logging():
  """main() configures logging for a terminal (a handler on this test's captured stderr,
  the pipelines logger at INFO); later tests must not log into that closed stream."""
  root, pipelines_logger = logging.getLogger(), logging.getLogger("pipelines")
  handlers, level, pipelines_level = root.handlers[:], root.level, pipelines_logger.level
  yield
  root.handlers[:] = handlers
  root.setLevel(level)
  pipelines_logger.setLevel(pipelines_level)


def test_help_shows_usage_and_examples(capsys):
  with pytest.raises(SystemExit) as e:
    prepare.main(["--help"])
  assert e.value.code == 0
  text = " ".join(capsys.readouterr().out.split())
  assert text.startswith("usage: python -m pipelines.prepare")
  assert "python -m pipelines.prepare --data_dir=runs/taobao --log=UserBehavior.csv.gz" in text
  assert "(default: runs/data)" in text


@pytest.mark.parametrize("argv,message", [
    (["--log=x.csv", "--synthetic_users=10"], "--synthetic_users is for the synthetic log"),
    (["--synthetic_users=0"], "--synthetic_users=0: must be >= 1"),
    (["--split=user_last"], "--split=user_last: build_dataset flags need --log"),
])
def test_usage_errors_exit_2_naming_the_flag(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as e:
    prepare.main([f"--data_dir={tmp_path / 'data'}", *argv])
  assert e.value.code == 2
  assert f"error: {message}" in capsys.readouterr().err


def test_a_complete_data_dir_is_reused(tmp_path, capsys):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  (data_dir / F.SCHEMA_FILE).write_text("{}")
  (data_dir / F.COMPLETE_FILE).write_text("{}")  # the marker the job writes last
  assert prepare.main([f"--data_dir={data_dir}", "--log=missing.csv"]) == 0
  assert capsys.readouterr().out.splitlines() == [
      f"Reusing the prepared data in {data_dir}",
      f"Data ready in {data_dir}; train with: python -m eta_tf.train --data_dir={data_dir}"]


def test_a_data_dir_without_the_complete_marker_is_rebuilt_not_reused(tmp_path, capsys):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  (data_dir / F.SCHEMA_FILE).write_text("{}")  # a killed job's leftovers: no _COMPLETE
  with pytest.raises(SystemExit) as exit_info:  # so the job runs, on a log that is not there
    prepare.main([f"--data_dir={data_dir}", "--log=missing.csv"])
  assert exit_info.value.code == 2
  assert "Reusing" not in capsys.readouterr().out
