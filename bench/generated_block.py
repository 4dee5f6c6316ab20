"""The rule that replaces one generated block of a doc: the text between a BEGIN and an END
marker line is rewritten, the rest of the file is kept byte for byte.

Used by the renderers (bench/report_summary.py, bench/serving_tradeoff.py);
bench/readme_block.py runs them all.
"""


def replace_block(path: str, begin: str, end: str, body: str, error=ValueError):
  """Writes `body` between the markers `begin` and `end` of the file at `path`.

  Raises `error` naming the file and the marker when either is missing (the caller says
  how to skip the README).
  """
  with open(path) as f:
    text = f.read()
  if begin not in text or end not in text:
    raise error(f"{path}: no '{begin}' ... '{end}' block to replace (pass --readme='' to "
                "skip the README)")
  head, rest = text.split(begin, 1)
  _, tail = rest.split(end, 1)
  with open(path, "w") as f:
    f.write(head + begin + "\n" + body.rstrip("\n") + "\n" + end + tail)
