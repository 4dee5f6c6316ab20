"""Generated blocks of the README: the text between a BEGIN and an END marker line is
replaced by a command's output, the rest of the file kept byte for byte."""


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
