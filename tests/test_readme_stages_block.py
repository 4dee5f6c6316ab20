"""The per-stage serving cost block of docs/results.md is what bench.readme_block renders
from the committed bench/results/serving_cost_breakdown.json (so it cannot drift from
the file), and the block rule keeps the rest of a file byte for byte."""
import json

import pytest

from bench import generated_block
from bench import readme_block


def test_results_doc_holds_the_block_rendered_from_the_committed_file():
  with open(readme_block.BREAKDOWN) as f:
    body = readme_block.stage_block(json.load(f))
  with open(readme_block.RESULTS_DOC) as f:
    text = f.read()
  block = text.split(readme_block.STAGES_BEGIN + "\n", 1)[1].split(
      "\n" + readme_block.STAGES_END, 1)[0]
  assert block == body.rstrip("\n"), "rerun python -m bench.readme_block"
  assert "| 4096 | 1000 | eta |" in block and "load average (1 min)" in block


def test_replace_block_keeps_the_rest_and_names_a_missing_marker(tmp_path):
  path = tmp_path / "doc.md"
  path.write_text("head\n<!-- B -->\nold\n<!-- E -->\ntail\n")
  generated_block.replace_block(str(path), "<!-- B -->", "<!-- E -->", "new\nlines\n")
  assert path.read_text() == "head\n<!-- B -->\nnew\nlines\n<!-- E -->\ntail\n"
  with pytest.raises(ValueError, match="doc.md.*<!-- X -->"):
    generated_block.replace_block(str(path), "<!-- X -->", "<!-- E -->", "x")
