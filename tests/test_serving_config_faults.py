"""The local server keeps serving across models.config files it cannot serve.

A config whose base_path is missing, whose base_path holds no version, or whose versions
all fail to load is rejected with a log line naming the path; the last good config keeps
serving (requests from a client thread succeed throughout). A good config after them is
applied as usual.
"""
import logging
import os
import shutil
import threading
import time

import numpy as np

from serving import client as client_lib
from serving import local_server as ls
from serving import model_config as mc
from serving import model_config_file
from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top

from serving_helpers import candidates, expected_ctr, history, publish_version, template

POLL_S = 0.05


def _write(path, base, versions):
  config = model_server_config_pb2.ModelServerConfig()
  config.model_config_list.config.append(mc.make_model_config("eta", base, versions))
  model_config_file.write_config(config, path)


def _wait_for_log(caplog, needle, timeout=30):
  deadline = time.time() + timeout
  while not any(needle in r.getMessage() for r in caplog.records):
    assert time.time() < deadline, f"no log line with {needle!r}"
    time.sleep(POLL_S)
  return next(r.getMessage() for r in caplog.records if needle in r.getMessage())


def test_unservable_configs_are_rejected_and_the_last_good_one_keeps_serving(
    tmp_path, caplog):
  caplog.set_level(logging.INFO, logger="serving.local_server")
  base = str(tmp_path / "export" / "eta")
  publish_version(base, 1)
  config = str(tmp_path / "models.config")
  _write(config, base, [1])
  empty = tmp_path / "empty"
  empty.mkdir()
  broken = tmp_path / "broken"
  shutil.copytree(template(2), broken / "1")
  (broken / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
  counts = {"ok": 0, "failed": 0}
  stop = threading.Event()
  with ls.LocalServer(model_config_file=config, port=0, file_system_poll_wait_seconds=POLL_S,
                      model_config_file_poll_wait_seconds=POLL_S) as server:
    server.wait_for_state("eta", 1)
    client = client_lib.ScoringClient(f"localhost:{server.port}", "eta", timeout_s=10)

    def load():
      while not stop.is_set():
        try:
          got = client.score_candidates(history(2), candidates([3, 4]))
          np.testing.assert_allclose(got, expected_ctr(1, 2, [3, 4]), rtol=1e-6)
          counts["ok"] += 1
        except Exception:  # pylint: disable=broad-except
          counts["failed"] += 1
    thread = threading.Thread(target=load)
    thread.start()
    try:
      for bad, needle in ((tmp_path / "missing", "does not exist"),
                          (empty, "no version under base_path"),
                          (broken, "none of its versions loads")):
        _write(config, str(bad), [1])
        line = _wait_for_log(caplog, str(bad))
        assert needle in line and "keeping the current config" in line, line
        time.sleep(10 * POLL_S)  # the file poller has seen it: still serving
        assert [(s.version, s.state) for s in client.model_status()] == [(1, "AVAILABLE")]
    finally:
      stop.set()
      thread.join()
    assert counts["failed"] == 0 and counts["ok"] > 0, counts
    # A good config is applied as usual: version 2 under the original base.
    publish_version(base, 2)
    _write(config, base, [2])
    server.wait_for_state("eta", 2)
    np.testing.assert_allclose(client.score_candidates(history(2), candidates([3, 4])),
                               expected_ctr(2, 2, [3, 4]), rtol=1e-6)
    client.close()
