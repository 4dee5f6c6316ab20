"""The README walkthrough, run from the README itself.

The bash blocks marked `<!-- walkthrough -->` in README.md are extracted, joined in order and
run verbatim by bash in a scratch directory (Quick start at the toy sizes of
tests/walkthrough.flags, a second export, the local server on runs/export/models.config,
status, label, promote, scoring by label and by version). The only inputs from outside are
environment: PORT (a free port), PYTHONPATH (this checkout) and a `tests` link to this
checkout's tests/ (for the flag file). Each `# answered by version N` comment in the blocks is
checked against the version the client prints (the response's model_spec).
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
_BLOCK_RE = re.compile(r"<!-- walkthrough -->\s*\n```bash\n(.*?)\n```", re.DOTALL)
_ANSWERED_RE = re.compile(r"# answered by version (\d+)")
_TRACE_RE = re.compile(r"^\++@@(\d+)@@ (\d+)s ")
_PRELUDE = ["set -euo pipefail", "export PS4='+@@${LINENO}@@ ${SECONDS}s '", "set -x"]


def walkthrough_script():
  """(bash script, {script line: version the README says answers there})."""
  with open(README, encoding="utf-8") as f:
    blocks = _BLOCK_RE.findall(f.read())
  assert len(blocks) >= 3, "README.md lost its <!-- walkthrough --> blocks"
  lines = _PRELUDE + "\n".join(blocks).splitlines()
  answered = {i + 1: int(m.group(1)) for i, line in enumerate(lines)
              for m in [_ANSWERED_RE.search(line)] if m}
  return "\n".join(lines) + "\n", answered


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _json_by_line(output):
  """{script line: [JSON objects printed while that line ran]} from the xtrace'd output."""
  by_line, current = {}, None
  for line in output.splitlines():
    trace = _TRACE_RE.match(line)
    if trace:
      current = int(trace.group(1))
    elif line.startswith("{") and current is not None:
      try:
        by_line.setdefault(current, []).append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return by_line


def _started_at(output):
  """{script line: bash's $SECONDS when it first ran} (where the time goes)."""
  started = {}
  for line in output.splitlines():
    trace = _TRACE_RE.match(line)
    if trace:
      started.setdefault(int(trace.group(1)), int(trace.group(2)))
  return started


def _answering_version(out):
  """The version that answered, from the client's `model_spec` (TF Serving's response)."""
  spec = out.get("model_spec") or {}
  return spec.get("version")


def test_readme_walkthrough(tmp_path):
  script, answered = walkthrough_script()
  assert sorted(set(answered.values())) == [1, 2]
  os.symlink(os.path.join(REPO, "tests"), tmp_path / "tests")
  env = {**os.environ, "PORT": str(_free_port()), "PYTHONPATH": REPO,
         "TF_CPP_MIN_LOG_LEVEL": "2"}
  start = time.monotonic()
  process = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
  try:
    output, _ = process.communicate(timeout=900)
  except subprocess.TimeoutExpired as e:
    partial = e.output or b""
    if isinstance(partial, bytes):
      partial = partial.decode(errors="replace")
    raise AssertionError(f"walkthrough still running after 900 s:\n{partial[-6000:]}") from None
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)  # the server, if the script stopped early
    except ProcessLookupError:
      pass
  elapsed = time.monotonic() - start
  server_log = tmp_path / "runs" / "server.log"
  assert process.returncode == 0, (
      f"walkthrough failed after {elapsed:.0f} s:\n{output[-6000:]}\n--- server.log:\n"
      f"{server_log.read_text()[-3000:] if server_log.exists() else '(none)'}")
  print(f"README walkthrough: {elapsed:.0f} s; seconds since start when each line began: "
        f"{_started_at(output)}")

  # The second export left `canary` on version 1 and said how to move it.
  config = "runs/export/models.config"
  assert (f"models.config: version 2 added; once it is AVAILABLE, move the label with: "
          f"python -m serving.model_config label --model_config_file={config} "
          f"--model_name=eta --label=canary --version=2") in output

  by_line = _json_by_line(output)
  statuses = [o for outs in by_line.values() for o in outs if "model_version_status" in o]
  assert statuses, output[-4000:]
  states = {s["version"]: s["state"] for s in statuses[-1]["model_version_status"]}
  assert states == {1: "AVAILABLE", 2: "AVAILABLE"}

  scores = []
  for line, version in sorted(answered.items()):
    outs = [o for o in by_line.get(line, []) if "ctr" in o]
    assert len(outs) == 1, (line, by_line.get(line), output[-4000:])
    ctr = outs[0]["ctr"]
    assert len(ctr) == 3 and all(0.0 < x < 1.0 for x in ctr), outs[0]
    assert _answering_version(outs[0]) == version, (line, outs[0])
    scores.append(ctr)
  # Version 2 is the same trained weights exported again: every answer scores the same.
  for ctr in scores[1:]:
    assert ctr == pytest.approx(scores[0], rel=1e-6)

  from serving import model_config as mc  # pylint: disable=g-import-not-at-top
  from serving import model_config_file  # pylint: disable=g-import-not-at-top
  model = mc.get_model(model_config_file.read_config(str(tmp_path / config)), "eta")
  assert list(model.model_version_policy.specific.versions) == [1, 2]
  assert dict(model.version_labels) == {"stable": 2, "canary": 2}
