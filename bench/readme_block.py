r"""Regenerates every generated block of the docs from the committed results files.

  python -m bench.readme_block     # no training, no timing: renders what bench/results holds

Runs, in order (each is also a command of its own):
1. `python -m bench.count_floor --render`: bench/results/COUNT_FLOOR.md;
2. `python -m bench.report --rerender --skip_serving`: bench/results/REPORT.md, the plots
   and the README's Results summary (from report.json, movielens.json, count_floor_*.json,
   serving_cost.json);
3. `python -m bench.serving_tradeoff`: serving_tradeoff.json/.png, the README's "Which
   model should I serve?" block and the capacity block of docs/serving.md.
A generated block is the text between a BEGIN and an END marker line; the rest of the file
is kept byte for byte (bench/generated_block.py). This module is the top of the renderers'
imports: none of them imports it.
"""
import argparse


def main(argv=None) -> int:
  argparse.ArgumentParser(
      prog="python -m bench.readme_block", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__).parse_args(argv)
  # Imported here: they load TensorFlow, which --help does not need.
  from bench import count_floor  # pylint: disable=g-import-not-at-top
  from bench import report  # pylint: disable=g-import-not-at-top
  from bench import serving_tradeoff  # pylint: disable=g-import-not-at-top
  count_floor.main(["--render"])
  report.rerender(["--skip_serving"])
  return serving_tradeoff.main([])


if __name__ == "__main__":
  raise SystemExit(main())
