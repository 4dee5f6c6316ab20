"""Dependencies point one way: contracts <- model <- data/export <- pipelines, serving <- entry
points (docs/DESIGN.md §0). Parses every product module's imports with `ast` (also
the ones inside functions) and fails when a module imports one from a higher layer or when
modules import each other in a cycle (also within a layer); lazy imports must say why on
their line or the line above."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("eta_tf", "pipelines", "serving", "bench")

# Lowest first. A module belongs to the longest entry that is it or its package; the bare
# `eta_tf` entry is the package's __init__ only (a new eta_tf module must be placed here).
LAYERS = (
    ("contracts", ("eta_tf", "eta_tf._keras_env", "eta_tf.features", "eta_tf.config",
                   "eta_tf.config_flags", "eta_tf.io_utils", "eta_tf.presets")),
    ("model", ("eta_tf.ops", "eta_tf.layers", "eta_tf.models", "eta_tf.experimental",
               "eta_tf.metrics",
               "eta_tf.signatures", "eta_tf.testing")),
    ("data and export", ("eta_tf.data", "eta_tf.training", "eta_tf.training_callbacks",
                         "eta_tf.saved_model", "eta_tf.savedmodel_session",
                         "eta_tf.baselines")),
    ("pipelines and serving", ("pipelines", "serving")),
    ("entry points", ("eta_tf.train", "eta_tf.export", "eta_tf.release", "bench")),
)
EXACT_ONLY = {"eta_tf"}


def layer_of(module: str):
  """(index, name) of the module's layer; None for modules outside the project."""
  best = None
  for index, (name, entries) in enumerate(LAYERS):
    for entry in entries:
      matches = module == entry or (entry not in EXACT_ONLY and
                                    module.startswith(entry + "."))
      if matches and (best is None or len(entry) > best[0]):
        best = (len(entry), index, name)
  return None if best is None else best[1:]


def imports_of(source: str, module: str, is_module=lambda name: False,
               project_only=True):
  """[(imported project module, line, enclosing function's line or None)] of one module.

  `from pkg import name` counts as `pkg.name` when `is_module(pkg.name)`, else as `pkg`.
  """
  tree = ast.parse(source)
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      nested = in_function
      if in_function is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.Lambda)):
        nested = child.lineno
      if isinstance(child, ast.Import):
        found.extend((a.name, child.lineno, in_function) for a in child.names)
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:  # relative: resolve against this module's package
          parts = module.split(".")[:-child.level]
          base = ".".join(parts + ([base] if base else []))
        for alias in child.names:
          full = f"{base}.{alias.name}"
          found.append((full if is_module(full) else base, child.lineno, in_function))
      visit(child, nested)

  visit(tree, None)
  return [(m, line, lazy) for m, line, lazy in found
          if not project_only or m.split(".")[0] in PACKAGES]


def layer_violations(sources, is_module=lambda name: False):
  """['a imports b (layer x -> higher layer y), line n'] for {module: source}."""
  problems = []
  for module, source in sorted(sources.items()):
    own = layer_of(module)
    if own is None:
      problems.append(f"{module}: not in any layer; add it to LAYERS")
      continue
    for target, line, _ in imports_of(source, module, is_module):
      theirs = layer_of(target)
      if theirs is None:
        problems.append(f"{module}:{line} imports {target}, which is in no layer")
      elif theirs[0] > own[0]:
        problems.append(f"{module}:{line} imports {target}: layer '{own[1]}' must not "
                        f"import the higher layer '{theirs[1]}'")
  return problems


def import_cycles(sources, is_module=lambda name: False):
  """Cycles of the project's import graph (every import, also lazy ones), each as
  ['a', 'b', ..., 'a']; [] when the graph is acyclic. Edges to modules outside `sources`
  (a package's name for a name imported from it, third-party modules) are ignored."""
  graph = {module: sorted({target for target, _, _ in imports_of(source, module, is_module)
                           if target in sources and target != module})
           for module, source in sources.items()}
  cycles, state = [], {}  # state: 1 on the current path, 2 done

  def visit(module, path):
    state[module] = 1
    path.append(module)
    for target in graph[module]:
      if state.get(target) == 1:
        cycles.append(path[path.index(target):] + [target])
      elif target not in state:
        visit(target, path)
    path.pop()
    state[module] = 2

  for module in sorted(graph):
    if module not in state:
      visit(module, [])
  return cycles


def unexplained_lazy_imports(source: str, module: str):
  """Function-level imports (of anything) without a comment saying why, on their line or
  the line above (one reason covers the later imports of the same function). A bare
  pylint pragma is not a reason."""
  lines = source.splitlines()
  problems, explained = [], set()
  for _, line, function in imports_of(source, module, project_only=False):
    if function is None:
      continue
    here = lines[line - 1].split("#", 1)[1] if "#" in lines[line - 1] else ""
    reason = here.split("pylint: disable=g-import-not-at-top", 1)[-1].strip(" ()")
    above = lines[line - 2].strip() if line >= 2 else ""
    if reason or above.startswith("#") or function in explained:
      explained.add(function)
    else:
      problems.append(f"{module}:{line}: function-level import without a reason")
  return problems


def product_sources():
  sources = {}
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          module = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
          with open(path, encoding="utf-8") as f:
            sources[module] = f.read()
  return sources


def test_no_module_imports_a_higher_layer():
  sources = product_sources()
  assert not layer_violations(sources, lambda name: name in sources)


def test_no_import_cycle():
  sources = product_sources()
  cycles = import_cycles(sources, lambda name: name in sources)
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_checker_finds_a_planted_cycle_also_through_a_lazy_import():
  sources = {"serving.client": "from serving import warmup\n",
             "serving.warmup": "import numpy\nfrom serving import inputs\n",
             "serving.inputs": "def f():\n  from serving.client import ScoringClient\n",
             "serving.client_cli": "from serving import client\n"}
  is_module = lambda name: name in sources  # noqa: E731
  assert import_cycles(sources, is_module) == [
      ["serving.client", "serving.warmup", "serving.inputs", "serving.client"]]
  del sources["serving.inputs"]
  assert import_cycles(sources, is_module) == []


def test_lazy_imports_say_why():
  problems = []
  for module, source in product_sources().items():
    problems += unexplained_lazy_imports(source, module)
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module,source,needle", [
    ("eta_tf.features", "from serving import publish\n", "imports serving"),
    ("eta_tf.data", "def f():\n  from eta_tf import release\n", "eta_tf.release"),
    ("eta_tf.saved_model", "import pipelines.prepare\n", "higher layer 'pipelines"),
    ("eta_tf.ops.hamming", "from ..training import train\n", "eta_tf.training"),
    ("eta_tf.newthing", "import os\n", "not in any layer"),
])
def test_checker_finds_a_planted_violation(module, source, needle):
  modules = {"eta_tf.release", "eta_tf.training", "eta_tf.training.train"}
  problems = layer_violations({module: source}, lambda name: name in modules)
  assert len(problems) == 1 and needle in problems[0], problems


def test_checker_allows_downward_imports_and_flags_unexplained_lazy_ones():
  source = ("from eta_tf import features\nimport serving.publish\n"
            "def f():\n  import eta_tf.data  # pylint: disable=g-import-not-at-top\n"
            "def g():\n  # keeps TensorFlow out of --help\n  import eta_tf.data\n"
            "  import numpy\n")
  assert not layer_violations({"eta_tf.train": source})
  assert unexplained_lazy_imports(source, "eta_tf.train") == [
      "eta_tf.train:4: function-level import without a reason"]
