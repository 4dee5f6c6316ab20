"""A log -> a training data dir in one call: the synthetic log if none is given, then the
Beam job in-process (pipelines.build_dataset.run). Used by `python -m eta_tf.train`'s
embedded default and by bench/.

    data_dir = prepare_synthetic_data("runs/eta/data", num_users=2000, seed=0)
    data_dir = build("logs/*.csv.gz", "data", seed=0)

The job writes into `<data_dir>.partial` and renames it when complete, so an existing
data_dir is always a finished one and is reused as is.
"""
import os
from typing import Callable, Optional, Sequence

from eta_tf import features as F
from pipelines import build_dataset
from pipelines import dataset_stats
from pipelines import synthetic


def is_complete(data_dir: str) -> bool:
  return os.path.exists(os.path.join(data_dir, F.SCHEMA_FILE))


def build(log_glob: str, data_dir: str, seed: int, extra_args: Sequence[str] = ()) -> str:
  """Runs the Beam job on `log_glob` into data_dir (unless complete); returns data_dir."""
  if is_complete(data_dir):
    return data_dir
  partial = data_dir + ".partial"
  stats = build_dataset.run([f"--input={log_glob}", f"--output_dir={partial}",
                             f"--seed={seed}", "--overwrite", *extra_args])
  print(dataset_stats.summarize(stats), flush=True)
  os.replace(partial, data_dir)
  return data_dir


def prepare_synthetic_data(data_dir: str, num_users: Optional[int], seed: int,
                           log_path: Optional[str] = None,
                           synthetic_args: Sequence[str] = (),
                           announce: Optional[Callable[[str], None]] = None) -> str:
  """Generates a synthetic log (pipelines.synthetic flags in `synthetic_args`, e.g.
  "--recent_categories=5"; `num_users` None keeps its default) and builds data_dir.

  `announce(text)` is called at the start of each of the two steps (the caller numbers
  them); not called when data_dir is complete already."""
  if is_complete(data_dir):
    print(f"Reusing the prepared data in {data_dir}", flush=True)
    return data_dir
  log_path = log_path or data_dir + ".log.csv.gz"
  args = [f"--output={log_path}", f"--seed={seed}", *synthetic_args]
  if num_users is not None:
    args.append(f"--num_users={num_users}")
  config, _ = synthetic.parse_args(args)
  if announce:
    announce(f"Generating a synthetic Taobao-format log ({config.num_users} users) "
             f"-> {log_path}")
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  synthetic.write_lines(log_path, synthetic.generate_log(config).lines)
  if announce:
    announce(f"Beam pipeline (DirectRunner) -> {data_dir}")
  return build(log_path, data_dir, seed)
