"""What machine a benchmark ran on: CPU model, vector extensions, cores and load.

Absolute times only mean something with the machine named (the same benchmark gives
different din_long/eta ratios on CPUs with and without AVX-512), and on a shared machine
the load average says how busy it was while the numbers were taken.
Every bench/results/*.json written by the serving benchmarks carries `describe()` with
`load_before` / `load_after` from `load_average()`.
"""
import json
import os
import platform
import sys
import time
from typing import Dict, List, Optional

CPUINFO = "/proc/cpuinfo"
# The AVX-512 subsets oneDNN's float32 / int8 / bf16 kernels dispatch on.
NOTABLE_AVX512 = ("avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16")


def _cpuinfo_field(text: str, field: str) -> Optional[str]:
  for line in text.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == field:
      return value.strip()
  return None


def vector_extensions(flags: List[str]) -> Dict[str, object]:
  """{"avx2": bool, "avx512": [avx512* flags], "amx": [amx* flags]} from cpuinfo flags.

  The kernel lists only what it lets processes use (a VM may hide AMX), which is what
  oneDNN can dispatch to.
  """
  flags = set(flags)
  return {"avx2": "avx2" in flags,
          "avx512": sorted(f for f in flags if f.startswith("avx512")),
          "amx": sorted(f for f in flags if f.startswith("amx"))}


def cpu_summary(cpu: Dict[str, object]) -> str:
  """One line: model, cores, AVX2 / AVX-512 / AMX as present."""
  ext = cpu["vector_extensions"]
  parts = ["AVX2" if ext["avx2"] else "no AVX2",
           (f"AVX-512 ({len(ext['avx512'])} flags, incl. " + ", ".join(
               f for f in NOTABLE_AVX512 if f in ext["avx512"]) + ")")
           if ext["avx512"] else "no AVX-512",
           f"AMX ({', '.join(ext['amx'])})" if ext["amx"] else "no AMX"]
  return f"{cpu['cpu_model']}, {cpu['cores']} cores, " + "; ".join(parts)


def load_average() -> List[float]:
  """os.getloadavg(): runnable processes averaged over 1, 5 and 15 minutes."""
  return [round(x, 2) for x in os.getloadavg()]


def usable_cores() -> int:
  """Cores this process may run on (its affinity mask), else os.cpu_count()."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def describe(cpuinfo_path: str = CPUINFO) -> Dict[str, object]:
  """The machine as a JSON-able dict (CPU model, extensions, usable cores, platform)."""
  try:
    with open(cpuinfo_path, encoding="utf-8") as f:
      text = f.read()
  except OSError:
    text = ""
  flags = (_cpuinfo_field(text, "flags") or "").split()
  cores = usable_cores()
  info = {"cpu_model": _cpuinfo_field(text, "model name") or platform.processor() or "unknown",
          "cores": cores, "vector_extensions": vector_extensions(flags),
          "platform": platform.platform(), "python": platform.python_version()}
  try:
    # Optional: the TensorFlow version when it is installed (this module works without it).
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    info["tensorflow"] = tf.__version__
  except ImportError:
    pass
  info["summary"] = cpu_summary(info)
  return info


def load_line(before: List[float], after: List[float]) -> str:
  return (f"load average (1/5/15 min) before {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f}, "
          f"after {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f}")


def start_run(command: str, argv) -> Dict[str, object]:
  """The header every serving benchmark's JSON starts with: machine, load, command, date.

  `command` is how the benchmark is invoked (e.g. "python -m bench.serving_load");
  argv its arguments (None: sys.argv[1:]).
  """
  args = sys.argv[1:] if argv is None else list(argv)
  return {"machine": describe(), "load_before": load_average(),
          "command": " ".join([command] + args),
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
          "started": time.time()}


def finish_run(run: Dict[str, object], complete: bool = True) -> Dict[str, object]:
  """A copy of start_run's header with load_after, the seconds since it started, and
  whether the run is complete (False: a partial result saved while it goes on)."""
  done = {k: v for k, v in run.items() if k != "started"}
  done.update(load_after=load_average(), seconds=round(time.time() - run["started"], 1),
              complete=complete)
  return done


def write_json(result, output_dir: str, filename: str) -> str:
  """Writes result to output_dir/filename (creating the directory); returns the path."""
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, filename)
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  return path
