"""README.md's performance table is the generator's, from the committed benchmark results."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_performance_block_matches_the_committed_results():
    spec = importlib.util.spec_from_file_location("readme_block", REPO / "benchmarks" / "readme_block.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = mod.README.read_text()
    assert mod.BEGIN in text and "| measured | before | after | target |" in mod.block()
    assert mod.render(text) == text, "README.md is out of date: run `python benchmarks/readme_block.py --write`"
    edited = text.replace(mod.BEGIN + "\n|", mod.BEGIN + "\n| hand edit |", 1)
    assert mod.render(edited) != edited  # a hand edit inside the block is caught
