"""The serving benchmarks end to end on tiny shapes.

bench/serving_cost.py: every kind of record is written (the served models with median and
p99, the top-k kernel in all its variants, the attention components, the per-stage
breakdown, training, the machine and its load), the summary prints the tables, the plot is written.
bench.serving_load / bench.serving_memory reuse its exports; bench.serving_tradeoff runs on
hand-made inputs whose Pareto front is known. The numbers themselves are the benchmarks'
business; here they only have to exist, be positive and be consistent.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = ["-m", "bench.serving_cost"]
# The models with the ratio and training columns; every other model takes the same path
# (export, TF1 session, interleaved rounds), and test_every_model_is_benchmarked_by_default
# checks the default is all of them (exporting all seven here would double this file's time).
TESTED_MODELS = ("eta", "eta_xla", "din_long")
L, N = 300, 40


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One tiny serving_cost run; its exports (kept in out/exports) serve the other tests."""
  out = tmp_path_factory.mktemp("serving_cost")
  result = subprocess.run(
      [sys.executable, *SCRIPT, f"--lengths={L}", f"--ns={N}", "--repeats=3",
       f"--models={','.join(TESTED_MODELS)}",
       "--component_repeats=1", f"--train_lengths={L}", "--train_batch=4",
       "--train_steps=1", f"--output_dir={out}", f"--export_dir={out / 'exports'}"],
      capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result.stdout


def test_serving_cost_writes_every_record_kind(tiny_run):
  out, stdout = tiny_run
  records = json.loads((out / "serving_cost.json").read_text())
  assert (out / "serving_cost.png").stat().st_size > 1000

  latency = [r for r in records if "model" in r]
  assert {r["model"] for r in latency} == set(TESTED_MODELS)
  for r in latency:
    assert (r["L"], r["N"], r["repeats"]) == (L, N, 3)
    assert 0 < r["median_ms"] <= r["p99_ms"]
  kernels = {(r["kernel"], r["xla"], r["sort"]) for r in records if "kernel" in r}
  assert kernels == {("hamming_topk", False, False), ("hamming_topk", True, False),
                     ("hamming_topk", False, True), ("hamming_topk_naive", False, True),
                     ("hamming_topk_category_first", False, False),
                     ("xor_popcount_floor", False, False)}
  for r in records:
    if "kernel" in r:
      assert (r["L"], r["N"]) == (L, N)
      assert abs(r["ns_per_pair"] - r["median_ms"] * 1e6 / (L * N)) < 1e-6 * r["ns_per_pair"]
  components = {r["component"] for r in records if "component" in r}
  assert components == {"attention_full", "attention_topk"}
  stages = {r["stages"]: r for r in records if "stages" in r}
  assert set(stages) == set(TESTED_MODELS)
  from bench.serving_cost_stages import STAGES  # pylint: disable=g-import-not-at-top
  assert set(stages["eta"]["stage_ms"]) == set(STAGES) | {"call_overhead"}
  assert set(stages["din_long"]["stage_ms"]) == {
      "embedding", "target_stats", "history_projection", "attention", "tower",
      "call_overhead"}
  for r in stages.values():
    assert min(r["stage_ms"].values()) >= 0 and r["model_ms"] > 0
    assert r["stage_sum_ms"] == pytest.approx(sum(
        v for k, v in r["stage_ms"].items() if k != "call_overhead"))
  training = {r["training"]: r for r in records if "training" in r}
  assert set(training) == {"eta", "eta_xla", "din_long"}
  for r in training.values():
    assert abs(r["examples_per_s"] - 4 / (r["median_step_ms"] / 1e3)) < 1e-6 * r["examples_per_s"]
  assert all(r.get("median_ms", 1) > 0 for r in records)

  run = [r for r in records if "machine" in r]
  assert len(run) == 1
  cpu = run[0]["machine"]
  assert cpu["cpu_model"] and cpu["cores"] >= 1
  assert set(cpu["vector_extensions"]) == {"avx2", "avx512", "amx"}
  assert len(run[0]["load_before"]) == 3 and len(run[0]["load_after"]) == 3
  assert run[0]["command"].startswith("python -m bench.serving_cost --lengths=300")

  assert f"machine: {cpu['summary']}" in stdout
  assert "load average (1/5/15 min) before" in stdout
  assert "score_candidates median ms" in stdout
  assert "score_candidates p99 ms" in stdout
  assert "attention components and top-k alone" in stdout
  assert "score_candidates by stage, median ms" in stdout
  assert f"training L={L}: eta" in stdout
  assert sorted(os.listdir(out / "exports")) == sorted(f"{m}_L{L}" for m in TESTED_MODELS)

  from bench import report_tables  # pylint: disable=g-import-not-at-top
  table = report_tables.serving_table(records)  # REPORT.md / README: the machine with the times
  assert table.startswith(f"Machine: {cpu['summary']}; `{run[0]['command']}`")


def test_every_model_is_benchmarked_by_default():
  from bench import serving_cost  # pylint: disable=g-import-not-at-top
  from bench.serving_cost_grid import MODELS, model_config  # pylint: disable=g-import-not-at-top
  from eta_tf import presets  # pylint: disable=g-import-not-at-top
  from eta_tf.config import MODEL_NAMES  # pylint: disable=g-import-not-at-top
  assert set(MODEL_NAMES) | {"eta_xla", "eta_paper"} <= set(MODELS) <= set(presets.PRESETS)
  # Names are presets: each model is its preset's config at that L.
  item = model_config("eta_paper", 1024)
  assert (item.signature_fields, item.experiment, item.max_len) == ("item", "", 1024)
  assert model_config("eta_attention_hash", 1024).experiment == "eta_attention_hash"
  assert model_config("eta", 1024).signature_fields == "item_category"
  assert serving_cost.build_parser().parse_args([]).models == list(MODELS)


def test_bad_lengths_and_models_are_refused_naming_the_flag_and_value(capsys):
  from bench import serving_cost  # pylint: disable=g-import-not-at-top
  for argv, message in (
      (["--lengths=1024,abc"], "--lengths: '1024,abc': expected comma-separated integers"),
      (["--models=eta,bert"], "--models: 'eta,bert': unknown model 'bert'")):
    with pytest.raises(SystemExit) as exit_info:
      serving_cost.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_serving_load_in_process_sweep_and_grpc(tiny_run, tmp_path):
  from bench import serving_load  # pylint: disable=g-import-not-at-top
  out, _ = tiny_run
  serving_load.main(["--quick", "--models=eta", f"--length={L}", f"--n={N}",
                     "--clients=1,2", "--seconds=0.3", f"--export_dir={out / 'exports'}",
                     f"--output_dir={tmp_path}"])
  result = json.loads((tmp_path / "serving_load.json").read_text())
  rows = result["models"]["eta"]
  in_process = {(r["intra_op"], r["inter_op"], r["clients"])
                for r in rows if r["path"] == "in_process"}
  assert in_process == {(a, b, c) for a, b in serving_load.THREADS for c in (1, 2)}
  assert {(r["intra_op"], r["inter_op"], r["clients"]) for r in rows
          if r["path"] == "grpc"} == {(0, 0, 1), (0, 0, 2)}
  for r in rows:
    assert r["requests"] > 0 and r["p50_ms"] <= r["p99_ms"]
    assert abs(r["requests_per_s"] - r["requests"] / r["seconds"]) < 1e-6 * r["requests_per_s"]
    assert r["cpu_seconds"] > 0
    assert r["requests_per_cpu_s"] == pytest.approx(r["requests"] / r["cpu_seconds"])
  best = result["best_threads"]["eta"]
  per_cpu = {}
  for r in rows:
    if r["path"] == "in_process":
      per_cpu.setdefault((r["intra_op"], r["inter_op"]), []).append(r["requests_per_cpu_s"])
  means = {k: sum(v) / len(v) for k, v in per_cpu.items()}
  assert (best["intra_op"], best["inter_op"]) == max(means, key=means.get)
  assert best["requests_per_cpu_s"] == pytest.approx(max(means.values()))
  assert result["machine"]["cores"] >= 1 and len(result["load_after"]) == 3


def test_serving_memory_sizes_table_share_resident_and_request_bytes(tiny_run, tmp_path):
  from bench import serving_memory  # pylint: disable=g-import-not-at-top
  from eta_tf.config import ModelConfig  # pylint: disable=g-import-not-at-top
  out, _ = tiny_run
  serving_memory.main(["--models=eta", f"--length={L}", f"--request_lengths={L},1024",
                       f"--request_ns=1,{N}", f"--export_dir={out / 'exports'}",
                       f"--output_dir={tmp_path}"])
  result = json.loads((tmp_path / "serving_memory.json").read_text())
  sizes = result["models"]["eta"]["saved_model"]
  assert sizes["total_bytes"] == serving_memory.dir_bytes(str(out / "exports" / f"eta_L{L}"))
  assert sizes["graph_bytes"] + sizes["variables_bytes"] <= sizes["total_bytes"]
  config = ModelConfig(model="eta", max_len=L)
  buckets = config.item_buckets + (config.category_buckets  # the category table
                                   if config.signature_fields == "item_category" else 0)
  assert sizes["signature_table_bytes"] == buckets * config.hash_words * 8
  assert sizes["signature_table_share"] == pytest.approx(
      sizes["signature_table_bytes"] / sizes["total_bytes"])
  resident = result["models"]["eta"]["resident"]
  assert [s["stage"] for s in resident["stages"]] == [
      "tensorflow imported", "one version loaded, one request",
      "two versions loaded (swap)", "first version closed"]
  assert 0 < resident["one_version_mib"] < resident["two_versions_mib"]
  requests = {(r["L"], r["N"]): r["request_bytes"] for r in result["requests"]}
  assert set(requests) == {(L, 1), (L, N), (1024, 1), (1024, N)}
  for (length, n), size in requests.items():  # 4 history + 2 candidate int64 arrays
    assert size > 8 * (4 * length + 2 * n)
  assert requests[(1024, N)] > requests[(L, N)]


def _tradeoff_inputs(directory):
  """report.json + serving_cost.json where the front is known: at L=1024 din, sim_hard;
  at L=4096 din, eta_xla, sim_hard (eta_xla has eta's AUC)."""
  aucs = {"din": (0.75, 0.76), "eta": (0.79, 0.79), "din_long": (0.78, 0.78),
          "sim_hard": (0.80, 0.80)}
  report = {"settings": {"synthetic default": {"rows": [
      {"model": m, "auc": a, "seed": s, "max_len": 256}
      for m, pair in aucs.items() for s, a in enumerate(pair)]}}}
  ms = {"din": (2, 3), "eta": (9, 12), "eta_xla": (8, 9), "din_long": (7.5, 15),
        "sim_hard": (7, 10)}
  serving = [{"machine": {"summary": "a CPU"}, "load_before": [1, 1, 1],
              "load_after": [2, 2, 2], "command": "python -m bench.serving_cost",
              "date": "today"}] + [
      {"model": m, "L": length, "N": n, "median_ms": t * (1 + (n == 1000)), "p99_ms": 2 * t}
      for m, pair in ms.items() for length, t in zip((1024, 4096), pair)
      for n in (200, 1000)]
  (directory / "report.json").write_text(json.dumps(report))
  (directory / "serving_cost.json").write_text(json.dumps(serving))


def test_serving_tradeoff_marks_the_pareto_front_and_fills_the_readme(tmp_path):
  from bench import serving_tradeoff  # pylint: disable=g-import-not-at-top
  _tradeoff_inputs(tmp_path)
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{serving_tradeoff.README_BEGIN}\nold\n"
                    f"{serving_tradeoff.README_END}\nafter\n")
  assert serving_tradeoff.main([f"--results_dir={tmp_path}", f"--readme={readme}",
                                "--auc_file=report.json",
                                "--latency_file=serving_cost.json"]) == 0
  result = json.loads((tmp_path / "serving_tradeoff.json").read_text())
  assert result["pareto"] == {"1024": ["din", "sim_hard"],
                              "4096": ["din", "eta_xla", "sim_hard"]}
  rows = {r["model"]: r for r in result["rows"]}
  assert rows["eta_xla"]["auc"] == rows["eta"]["auc"] == pytest.approx(0.79)
  assert rows["din"]["auc_std"] == pytest.approx(0.00707, abs=1e-4)
  assert rows["din_long"]["median_ms_L4096"] == 15 and rows["din_long"]["p99_ms_L4096"] == 30
  assert (tmp_path / "serving_tradeoff.png").stat().st_size > 1000
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("after\n") and "old" not in text
  assert "| sim_hard | 0.8000 ± 0.0000 | 7.00 / 14.00 ★ | 10.00 / 20.00 ★ |" in text
  assert "| eta_xla | 0.7900 ± 0.0000 (eta's) | 8.00 / 16.00 | 9.00 / 18.00 ★ |" in text
  assert "Pareto front at L=4096, cheapest first: din, eta_xla, sim_hard." in text


def test_serving_tradeoff_names_a_missing_input(tmp_path, capsys):
  from bench import serving_tradeoff  # pylint: disable=g-import-not-at-top
  _tradeoff_inputs(tmp_path)
  os.remove(tmp_path / "serving_cost.json")
  assert serving_tradeoff.main([f"--results_dir={tmp_path}", "--readme=",
                                "--auc_file=report.json",
                                "--latency_file=serving_cost.json"]) == 2
  assert f"{tmp_path / 'serving_cost.json'}: not found" in capsys.readouterr().err


def test_serving_tradeoff_reads_aucs_from_a_count_floor_output(tmp_path):
  """The default AUC source: count_floor rows (several seeds per model), grouped by model."""
  from bench import serving_tradeoff  # pylint: disable=g-import-not-at-top
  _tradeoff_inputs(tmp_path)
  rows = [{"model": m, "seed": s, "auc": a, "config": {"max_len": 256}}
          for m, aucs in {"eta": (0.70, 0.72), "din_long": (0.69, 0.69),
                          "sim_hard": (0.68, 0.70)}.items() for s, a in enumerate(aucs)]
  (tmp_path / "floor.json").write_text(json.dumps({"setting": "real log", "rows": rows}))
  assert serving_tradeoff.main([f"--results_dir={tmp_path}", "--readme=",
                                "--auc_file=floor.json",
                                "--latency_file=serving_cost.json"]) == 0
  result = json.loads((tmp_path / "serving_tradeoff.json").read_text())
  got = {r["model"]: r for r in result["rows"]}
  assert set(got) == {"eta", "eta_xla", "din_long", "sim_hard"}  # models with an AUC
  assert got["eta"]["auc"] == pytest.approx(0.71) and got["eta"]["seeds"] == 2
  assert got["eta"]["auc_std"] == pytest.approx(0.01414, abs=1e-4)
  assert got["eta"]["trained_max_len"] == 256 and result["setting"] == "real log"
  assert result["auc_file"] == "floor.json"


def test_pareto_keeps_ties_and_drops_dominated_points():
  from bench import serving_tradeoff  # pylint: disable=g-import-not-at-top
  points = {"a": (0.80, 10.0), "b": (0.80, 10.0), "c": (0.79, 10.0), "d": (0.81, 20.0),
            "e": (0.70, 1.0)}
  assert serving_tradeoff.pareto(points) == {"a", "b", "d", "e"}


def test_stage_tables_name_every_stage():
  """The breakdown tables: a row per (L, N, model), '-' for a stage the model lacks."""
  from bench import serving_cost_summary  # pylint: disable=g-import-not-at-top
  records = [{"stages": "din_long", "L": 1024, "N": 200, "model_ms": 5.0,
              "stage_ms": {"embedding": 0.5, "target_stats": 1.0, "history_projection": 0.3,
                           "attention": 2.5, "tower": 0.7, "call_overhead": 0.2},
              "stage_sum_ms": 5.0 - 0.0}]
  text = serving_cost_summary.stage_markdown(records)
  assert text.splitlines()[2] == ("| 1024 | 200 | din_long | 0.50 | - | 1.00 | 0.30 | - | - "
                                  "| - | 2.50 | - | 0.70 | 5.00 | 5.00 |")
  lines = serving_cost_summary.stage_lines(records)
  assert "score_candidates by stage" in lines[1] and lines[-1].split()[2] == "din_long"


def test_gathered_attention_ab_scores_both_formulations_alike(monkeypatch, tmp_path):
  """bench.gathered_attention_ab: the exported eta and sim_hard score a request the same
  (1e-5) with the batched-product attention over the k and with the elementwise one."""
  from bench import export_ab  # pylint: disable=g-import-not-at-top
  from bench import gathered_attention_ab  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(export_ab, "RESULTS_DIR", str(tmp_path))
  gathered_attention_ab.main(["--sizes", "64:9", "--repeats", "2", "--output_name", "ab"])
  with open(tmp_path / "ab.json") as f:
    (record,) = json.load(f)["records"]
  assert record["L"] == 64 and record["N"] == 9
  for name in gathered_attention_ab.MODELS:
    assert record[f"max_abs_score_diff_{name}"] < 1e-5
    assert record["median_ms"][name] > 0 and record["median_ms"][name + "_elementwise"] > 0
