r"""Scale of the data path on Taobao-shaped logs: pipeline and trainer input vs log size.

  python -m bench.scale [--events=1000000,4000000,16000000] [--events_per_shard=500000]
                        [--max_len=1024] [--beam_args=...]

For each size: a Taobao-shaped log (generate_log: per-user lengths log-normal with mean
~101 and a long tail to thousands, as UserBehavior's 100,150,807 events of 987,994 users;
~27% of events revisit an item of the user's past; distinct items ~0.65 x events; Taobao's
behavior mix over 9 days), then pipelines.build_dataset in a child process on the local
Beam runner, in user shards of ~--events_per_shard events (--user_shards, the memory-
bounded local path; 0 = one pipeline) -- wall seconds, events/s, peak RSS of the whole
process tree (polled from /proc), output bytes -- then the trainer's input pipeline
(eta_tf.data.make_dataset at L=--max_len) in another child: training examples/s over
--input_batches batches and its peak RSS. A least-squares line over the sizes gives
seconds = fixed + events / rate and RSS vs events and vs distinct items, extrapolated to the
full UserBehavior file (bench/scale_fit.py). Results: bench/results/scale.json.

What grows with the log: with user shards the per-user work and the keyed joins of the
matched negatives hold one shard at a time; the tables left global (the leakage check's
item facts, the "any item" negative fallback) grow with distinct items, which this
generator makes ~0.65 x events (as in a 927-user sample of UserBehavior) -- the full file has
4,162,024 items for 100M events, so RSS is also fitted against distinct items
(--joint_fit over two series) and extrapolated at the full file's item count.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bench import machine
from bench.scale_fit import FULL_TAOBAO_ITEMS, fit_runs, joint_fit
from pipelines.build_dataset_flags import non_negative

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RESULTS_FILE = "scale.json"
TAOBAO_START = 1511539200
DAYS = 9
MEAN_EVENTS_PER_USER = 101.4  # 100,150,807 / 987,994
LENGTH_SIGMA = 1.0  # log-normal spread: median ~61, p99 ~620, max in the thousands
REVISIT_RATE = 0.27
BEHAVIORS = ("pv", "cart", "fav", "buy")
BEHAVIOR_PROBS = (0.895, 0.055, 0.03, 0.02)
DEFAULT_BEAM_ARGS = ""  # build_dataset's default local runner: in-memory, one process
DEFAULT_EVENTS_PER_SHARD = 500_000


def user_lengths(num_events: int, rng: np.random.Generator) -> np.ndarray:
  """Per-user event counts [U] summing to num_events: log-normal, mean ~101, clipped."""
  mu = np.log(MEAN_EVENTS_PER_USER) - LENGTH_SIGMA ** 2 / 2
  draws = int(1.5 * num_events / MEAN_EVENTS_PER_USER) + 64
  lengths = np.zeros(0, np.int64)
  while lengths.sum() < num_events:  # enough users to cover num_events
    lengths = np.concatenate([lengths, np.clip(np.round(rng.lognormal(
        mu, LENGTH_SIGMA, draws)), 1, 20_000).astype(np.int64)])
  ends = np.cumsum(lengths)
  users = int(np.searchsorted(ends, num_events)) + 1
  lengths = lengths[:users]
  lengths[-1] -= ends[users - 1] - num_events
  return lengths[lengths > 0]


def generate_log(num_events: int, seed: int, path: str, item_pool: int = 0) -> dict:
  """Writes a Taobao-shaped log (UserBehavior format) and returns its shape facts.

  item_pool: items the long tail draws from; 0 = 20 x events (distinct items ~0.65 x
  events, the issue's 927-user sample); the full file's 4,162,024 items make distinct
  items saturate as the log grows, as they do in the real file (0.04 per event).
  """
  rng = np.random.default_rng(seed)
  lengths = user_lengths(num_events, rng)
  n = int(lengths.sum())
  user = np.repeat(np.arange(1, len(lengths) + 1), lengths)
  starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
  rank = np.arange(n) - starts
  # New items: 10% from a few popular ones (Zipf), 90% from a pool 20x the log, i.e. a
  # long tail of items seen about once (distinct items ~0.65 x events with the revisits).
  pool = item_pool or 20 * n
  popular = np.minimum(rng.zipf(1.3, n), pool) - 1
  tail = rng.integers(0, pool, n)
  item = np.where(rng.random(n) < 0.1, popular, tail) + 1
  # Revisits: the item of a uniformly chosen earlier event of the user (chains followed).
  revisit = (rng.random(n) < REVISIT_RATE) & (rank > 0)
  source = np.arange(n) - 1 - np.floor(rng.random(n) * rank).astype(np.int64)
  origin = np.where(revisit, source, np.arange(n))
  while revisit[origin].any():
    origin = np.where(revisit[origin], source[origin], origin)
  item = item[origin]
  category = (item * 2654435761 % 9439) + 1  # a fixed item -> category map
  ts = TAOBAO_START + rng.integers(0, DAYS * 86400, n)
  ts = ts[np.lexsort((ts, user))]
  behavior = np.asarray(BEHAVIORS)[rng.choice(len(BEHAVIORS), n, p=BEHAVIOR_PROBS)]
  with open(path, "w") as f:
    for lo in range(0, n, 1 << 20):
      hi = min(n, lo + (1 << 20))
      f.write("".join(f"{u},{i},{c},{b},{t}\n" for u, i, c, b, t in zip(
          user[lo:hi].tolist(), item[lo:hi].tolist(), category[lo:hi].tolist(),
          behavior[lo:hi].tolist(), ts[lo:hi].tolist())))
  return {"events": n, "users": len(lengths), "items": int(len(np.unique(item))),
          "mean_events_per_user": round(n / len(lengths), 1),
          "p50_p99_max_events_per_user": [int(np.percentile(lengths, 50)),
                                          int(np.percentile(lengths, 99)),
                                          int(lengths.max())],
          "revisit_share": round(float(revisit.mean()), 3),
          "bytes": os.path.getsize(path)}


def _tree_rss_bytes(root: int) -> int:
  """Resident set size of `root` and all its descendants, from /proc."""
  children, rss = {}, {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      with open(f"/proc/{entry}/statm") as f:
        rss[int(entry)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
      continue
    children.setdefault(ppid, []).append(int(entry))
  total, todo = 0, [root]
  while todo:
    pid = todo.pop()
    total += rss.get(pid, 0)
    todo += children.get(pid, [])
  return total


# Progress lines of the user-sharded job that end a step (pipelines.sharded and
# sharded_negatives / sharded_leakage log them), in order: the step each one closes.
STEP_ENDS = (("partitioned the input", "partition"), ("grouped", "group by user"),
             ("queries written", "negatives: queries + item weights"),
             ("negatives drawn", "negatives: draw"),
             ("negatives attached", "negatives: fallbacks + attach"),
             ("global facts, then split", "(reading shard stats)"),
             ("split and encode done", "global facts, split, encode, write"),
             ("leakage check", "leakage check by item shard"),
             ("done in", "(cleanup)"))


def step_of(line: str):
  """The step a progress line closes, or None."""
  return next((step for marker, step in STEP_ENDS if marker in line), None)


def run_measured(cmd, progress: str = "") -> dict:
  """Runs cmd; wall seconds, peak process-tree RSS (polled every 0.2 s), its output, and
  the peak RSS of each step (STEP_ENDS; what ran before the first progress line is in the
  first step; one-pipeline runs have none).

  Output lines containing `progress` are echoed as they come (a long job's progress)."""
  started = time.time()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  peak, step_peak = [0], [0]
  done = threading.Event()

  def poll():
    while not done.is_set():
      rss = _tree_rss_bytes(proc.pid)
      peak[0], step_peak[0] = max(peak[0], rss), max(step_peak[0], rss)
      done.wait(0.2)

  poller = threading.Thread(target=poll, daemon=True)
  poller.start()
  lines, steps = [], {}
  for line in proc.stdout:
    lines.append(line)
    if progress and progress in line:
      print("  " + line.rstrip()[-110:], flush=True)
      step = step_of(line)
      if step:
        steps[step] = max(steps.get(step, 0), step_peak[0])
        step_peak[0] = 0
  proc.wait()
  output = "".join(lines)
  done.set()
  poller.join()
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
  return {"seconds": round(time.time() - started, 2), "peak_rss_bytes": peak[0],
          "step_peak_rss_bytes": steps, "output": output}


def run_pipeline(log: str, out: str, shards: int, beam_args: str) -> dict:
  """pipelines.build_dataset on `log` in a child: time, peak RSS, what it wrote."""
  measured = run_measured([sys.executable, "-m", "pipelines.build_dataset",
                           f"--input={log}", f"--output_dir={out}", f"--user_shards={shards}",
                           *shlex.split(beam_args)], progress="user shards:")
  with open(os.path.join(out, "stats.json")) as f:
    stats = json.load(f)
  events = stats["rows"]["behaviors"]["input"]
  return {"seconds": measured["seconds"],
          "events_per_second": round(events / measured["seconds"]),
          "peak_rss_bytes": measured["peak_rss_bytes"],
          "step_peak_rss_bytes": measured["step_peak_rss_bytes"],
          "user_shards": shards,
          "items": stats["items"],
          "bytes_written": stats["bytes_written"],
          "targets": {s: stats["splits"][s]["targets"] for s in stats["splits"]},
          "balanced": stats["rows"]["behaviors"]["balanced"]}


def measure_input(data_dir: str, max_len: int, batch_size: int, batches: int) -> dict:
  """Trainer input pipeline throughput (child process): examples/s after 2 warm-up batches."""
  from eta_tf import data  # pylint: disable=g-import-not-at-top  (TF only in this child)
  ds = iter(data.make_dataset(data_dir, "train", max_len=max_len, batch_size=batch_size,
                              shuffle=True, repeat=True))
  for _ in range(2):
    next(ds)
  started, examples = time.time(), 0
  for _ in range(batches):
    _, labels = next(ds)
    examples += int(labels.shape[0])
  seconds = time.time() - started
  return {"examples": examples, "seconds": round(seconds, 2),
          "examples_per_second": round(examples / seconds)}


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--events", default="1000000,4000000,16000000",
                      help="comma-separated log sizes (default 1M,4M,16M: ~1 h on 2 cores)")
  parser.add_argument("--events_per_shard", type=non_negative,
                      default=DEFAULT_EVENTS_PER_SHARD,
                      help="build_dataset --user_shards = ceil(events / this) (default "
                           f"{DEFAULT_EVENTS_PER_SHARD}); 0 = one pipeline")
  parser.add_argument("--one_pipeline_events", default=None,
                      help="sizes also run as one pipeline (--user_shards=1), side by side "
                           "(default: the smallest size; '' = none)")
  parser.add_argument("--item_pool", type=non_negative, default=0,
                      help="items the generator draws from (default 0 = 20 x events: "
                           "distinct items ~0.65 x events, the issue's sample; "
                           f"{FULL_TAOBAO_ITEMS} = the full file's item count)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max_len", type=int, default=1024, help="trainer L (default 1024)")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--input_batches", type=int, default=100,
                      help="batches timed in the trainer input pipeline (default 100)")
  parser.add_argument("--beam_args", default=DEFAULT_BEAM_ARGS,
                      help=f"Beam options of the pipeline runs (default {DEFAULT_BEAM_ARGS!r})")
  parser.add_argument("--work_dir", default=None,
                      help="parent of the run's scratch directory (created if missing; "
                           "default the system temp dir); the scratch directory is removed "
                           "at the end")
  parser.add_argument("--output_dir", default=RESULTS_DIR)
  parser.add_argument("--output_name", default=RESULTS_FILE,
                      help=f"results file name in --output_dir (default {RESULTS_FILE})")
  parser.add_argument("--refit", default=None,
                      help="only recompute the fit of a saved (e.g. partial) results file")
  parser.add_argument("--joint_fit", default=None,
                      help="only fit RSS and time against events and distinct items over "
                           "the runs of these comma-separated results files (e.g. "
                           "bench/results/scale.json,bench/results/scale_full_item_count.json)"
                           "; writes scale_joint_fit.json in --output_dir")
  parser.add_argument("--measure_input", default=None, help=argparse.SUPPRESS)  # child mode
  args = parser.parse_args(argv)
  if args.measure_input:
    print(json.dumps(measure_input(args.measure_input, args.max_len, args.batch_size,
                                   args.input_batches)))
    return
  if args.joint_fit:
    result = dict(machine.finish_run(machine.start_run("python -m bench.scale", argv)),
                  **joint_fit(args.joint_fit.split(",")))
    print(json.dumps({k: result[k] for k in ("peak_rss_bytes", "seconds",
                                             "full_userbehavior")}, indent=1))
    print("wrote", machine.write_json(result, args.output_dir, "scale_joint_fit.json"))
    return
  if args.refit:
    with open(args.refit) as f:
      result = json.load(f)
    result["fit"] = fit_runs(result["runs"])
    with open(args.refit, "w") as f:
      json.dump(result, f, indent=1)
    print(json.dumps(result["fit"], indent=1))
    return
  run = machine.start_run("python -m bench.scale", argv)
  sizes = [int(s) for s in args.events.split(",")]
  one_pipeline_sizes = ([int(s) for s in args.one_pipeline_events.split(",") if s]
                        if args.one_pipeline_events is not None else sizes[:1])
  runs, one_pipeline_runs = [], []
  if args.work_dir:  # a scratch dir inside it (made if missing): never the dir itself
    os.makedirs(args.work_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
    for size in sizes:
      log = os.path.join(work, f"log_{size}.csv")
      started = time.time()
      shape = generate_log(size, args.seed, log, args.item_pool)
      generate_seconds = time.time() - started
      out = os.path.join(work, f"data_{size}")
      shards = max(1, -(-size // args.events_per_shard)) if args.events_per_shard else 1
      if size in one_pipeline_sizes and shards > 1:  # side by side: the one-pipeline job
        print(f"== {size} events: one pipeline (--user_shards=1) ...", flush=True)
        single = run_pipeline(log, out + "_one_pipeline", 1, args.beam_args)
        one_pipeline_runs.append({"events": shape["events"], "pipeline": single})
        print(json.dumps(one_pipeline_runs[-1]), flush=True)
      print(f"== {size} events (log written in {generate_seconds:.0f} s): pipeline with "
            f"--user_shards={shards} ...", flush=True)
      pipeline = run_pipeline(log, out, shards, args.beam_args)
      reader = run_measured([sys.executable, "-m", "bench.scale", f"--measure_input={out}",
                             f"--max_len={args.max_len}", f"--batch_size={args.batch_size}",
                             f"--input_batches={args.input_batches}"])
      input_result = json.loads(reader["output"].strip().splitlines()[-1])
      record = {
          "events": shape["events"], "log": shape,
          "generate_seconds": round(generate_seconds, 1),
          "pipeline": pipeline,
          "trainer_input": dict(input_result, max_len=args.max_len,
                                batch_size=args.batch_size,
                                peak_rss_bytes=reader["peak_rss_bytes"]),
      }
      print(json.dumps({k: record[k] for k in ("events", "pipeline", "trainer_input")}),
            flush=True)
      runs.append(record)
      os.remove(log)  # disk: a 16M-event log is ~0.5 GB, its output as much
      shutil.rmtree(out)
      result = dict(machine.finish_run(run, complete=False), beam_args=args.beam_args,
                    item_pool=args.item_pool, events_per_shard=args.events_per_shard,
                    runs=runs,
                    one_pipeline_runs=one_pipeline_runs)
      machine.write_json(result, args.output_dir, args.output_name)  # partial, after each size
  fit = fit_runs(runs)
  result = dict(machine.finish_run(run), beam_args=args.beam_args, item_pool=args.item_pool,
                events_per_shard=args.events_per_shard, runs=runs,
                one_pipeline_runs=one_pipeline_runs, fit=fit)
  print(json.dumps(fit, indent=1))
  print("wrote", machine.write_json(result, args.output_dir, args.output_name))


if __name__ == "__main__":
  main()
