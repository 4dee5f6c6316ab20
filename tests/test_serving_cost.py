"""bench/serving_cost.py end to end on tiny shapes: every kind of record is written (model
latencies, the top-k kernel in all its variants, the attention components, training), the
summary prints the tables, and the plot is written. The numbers themselves are the
benchmark's business; here they only have to exist, be positive and be consistent."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "serving_cost.py")


def test_serving_cost_writes_every_record_kind(tmp_path):
  result = subprocess.run(
      [sys.executable, SCRIPT, "--lengths=300", "--ns=40", "--repeats=1",
       "--train_lengths=300", "--train_batch=4", "--train_steps=1",
       f"--output_dir={tmp_path}"],
      capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  records = json.loads((tmp_path / "serving_cost.json").read_text())
  assert (tmp_path / "serving_cost.png").stat().st_size > 1000

  models = {r["model"] for r in records if "model" in r}
  assert models == {"eta", "eta_xla", "din_long", "din"}
  kernels = {(r["kernel"], r["xla"], r["sort"]) for r in records if "kernel" in r}
  assert kernels == {("hamming_topk", False, False), ("hamming_topk", True, False),
                     ("hamming_topk", False, True), ("hamming_topk_naive", False, True)}
  for r in records:
    if "kernel" in r:
      assert (r["L"], r["N"]) == (300, 40)
      assert abs(r["ns_per_pair"] - r["median_ms"] * 1e6 / (300 * 40)) < 1e-6 * r["ns_per_pair"]
  components = {r["component"] for r in records if "component" in r}
  assert components == {"attention_full", "attention_topk"}
  training = {r["training"]: r for r in records if "training" in r}
  assert set(training) == {"eta", "eta_xla", "din_long"}
  for r in training.values():
    assert abs(r["examples_per_s"] - 4 / (r["median_step_ms"] / 1e3)) < 1e-6 * r["examples_per_s"]
  assert all(r.get("median_ms", 1) > 0 for r in records)

  out = result.stdout
  assert "score_candidates median ms" in out
  assert "attention components and top-k alone" in out
  assert "training L=300: eta" in out


def test_bad_lengths_are_refused_naming_the_flag_and_value():
  result = subprocess.run([sys.executable, SCRIPT, "--lengths=1024,abc"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 2
  assert "--lengths: '1024,abc': expected comma-separated integers" in result.stderr
