"""sfn localize: consistency of the two ends, the outputs, the statistics and every bad input."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from sfn_merge_plugin.errors import CheckpointError, DataError, SelectorError, UsageError
from sfn_merge_plugin.localize import MapConfig, merge_table_in_memory, run_map
from sfn_merge_plugin.localize import stats
from sfn_merge_plugin.localize.plan import plan_cells, windows
from sfn_merge_plugin.localize.report import summary_lines


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_torch_thread):
    """Tiny models run much faster on one thread of a shared machine."""


def small(base, tuned, **kw):
    cfg = dict(task="chain", problems=4, max_new_tokens=6, chat_prompts=2, chat_tokens=6, bootstrap=200,
               modules="o_proj,qkv", window=2, progress=False)
    cfg.update(kw)
    return MapConfig(base, tuned, **cfg)


@pytest.fixture(scope="module")
def phi3_map(tiny_pair, tmp_path_factory):
    base, tuned = tiny_pair("phi3")  # fused qkv_proj: the qkv row swaps blocks of one tensor
    out = tmp_path_factory.mktemp("map") / "map"
    return run_map(small(base, tuned, out=str(out), consistency=True)), out


def test_all_modules_give_the_other_model_and_none_gives_the_loaded_one(phi3_map):
    result, _ = phi3_map
    ends = {d: {r.cell.row: r for r in result.cells[d][:2]} for d in result.cells}
    assert result.consistency == {"sufficiency(all) == tuned": True, "necessity(all) == base": True}
    assert ends["sufficiency"]["all"].digest == ends["necessity"]["none"].digest
    assert ends["necessity"]["all"].digest == ends["sufficiency"]["none"].digest
    assert ends["sufficiency"]["none"].digest != ends["necessity"]["none"].digest  # the check can fail: the models differ
    assert any("reproduced its probe logits bit for bit" in c for c in result.checks)


def test_outputs_are_numeric_and_complete(phi3_map):
    result, out = phi3_map
    rows = list(csv.DictReader(open(out / "map.csv")))
    assert len(rows) == 2 * 2 * 2  # directions x windows x module rows
    assert list(rows[0])[:10] == ["direction", "module", "layers", "accuracy", "ci_low", "ci_high", "share",
                                  "share_ci_low", "share_ci_high", "level"]
    for row in rows:
        for key in ("accuracy", "ci_low", "ci_high"):
            float(row[key])  # a number, never "0.50 ± 0.1"
        assert row["level"] in ("I", "II", "III", "IV")
    assert {r["layers"] for r in rows} == {"0-1", "2-3"} and {r["module"] for r in rows} == {"o_proj", "qkv"}
    doc = json.loads((out / "map.json").read_text())
    assert doc["consistency"] and doc["timing"]["peak_rss_bytes"] > doc["timing"]["model_bytes"] > 0
    assert (out / "sufficiency.png").stat().st_size > 10_000 and (out / "necessity.png").is_file()
    assert "gap" in (out / "summary.md").read_text()


def test_the_base_end_matches_evaluation_generation(phi3_map, tiny_pair):
    """The none cell of sufficiency is the base as evaluation's own generate() sees it."""
    from sfn_merge_plugin.evaluation.hf_backend import generate
    from sfn_merge_plugin.sweep.runner import load

    result, _ = phi3_map
    model, tok = load(tiny_pair("phi3")[0], device="cpu")
    prompt, text = result.cells["sufficiency"][0].examples[0]
    out = generate(model, tok, [prompt], preset="plain", chat=True, max_gen_toks=6, budget_forcing=False, progress=False)
    assert tok.decode(tok.encode(out[0].text, add_special_tokens=False), skip_special_tokens=True) == text


def test_merge_table_in_memory_is_the_mergekit_merge(tiny_pair, run_recipe, tmp_path):
    from sfn_merge_plugin.sweep.runner import load

    base, tuned = tiny_pair("qwen2", untie=True, tied=True)
    ids = torch.tensor([[3, 40, 41, 42, 17, 99]])
    logits = lambda m, tok: m(input_ids=ids).logits.detach().clone()
    rows = merge_table_in_memory(base, tuned, [("o_proj", "o_proj"), ("mlp", "mlp")], logits, device="cpu", progress=False)
    for label, modules in (("o_proj", "o_proj"), ("mlp", "mlp")):
        out = run_recipe({"merge_method": "sfn_swap", "base_model": base, "models": [{"model": tuned}],
                          "parameters": {"modules": modules}}, out=tmp_path / label)
        assert torch.equal(rows[label], logits(load(out, device="cpu")[0], None)), label


def test_bootstrap_intervals_and_shares():
    idx = stats.resample_indices(40, 2, 500, seed=1)
    ones, zeros = np.ones((40, 2)), np.zeros((40, 2))
    half = np.zeros((40, 2))
    half[:20] = 1
    assert stats.accuracy(ones, idx) == stats.Estimate(1.0, 1.0, 1.0)
    e = stats.share("sufficiency", half, zeros, ones, idx)
    assert e.value == 0.5 and e.low < 0.5 < e.high and e.high - e.low > 0.1
    assert stats.share("necessity", half, zeros, ones, idx).value == 0.5
    assert stats.share("necessity", zeros, zeros, ones, idx).value == 1.0  # reverting it loses the whole gap
    assert math.isnan(stats.share("sufficiency", half, ones, ones, idx).value)  # no gap, no share
    g = stats.gap(half, half, idx)
    assert g.value == 0 and g.low <= 0 <= g.high


def _fake(result_cells, base, tuned, gap=(0.8, 0.7, 0.9)):
    from types import SimpleNamespace

    from sfn_merge_plugin.localize.plan import Cell
    from sfn_merge_plugin.localize.run import CellResult, MapResult

    cells = []
    for row, layers, share in result_cells:
        r = CellResult(Cell("sufficiency", row, layers), np.zeros((8, 1)), [])
        r.accuracy, r.share = stats.Estimate(0.5, 0.4, 0.6), stats.Estimate(*share)
        cells.append(r)
    cfg = MapConfig("b", "t", directions=("sufficiency",))
    timing = {"cells": len(cells), "seconds": 1.0, "cells_per_minute": 60.0, "peak_rss_bytes": 2**20, "model_bytes": 2**20}
    return MapResult(cfg, "x", 4, {"sufficiency": cells, "necessity": []}, base, tuned,
                     stats.Estimate(*gap), [], {}, timing)


def test_summary_says_plainly_when_nothing_stands_out():
    lo, hi = stats.Estimate(0.1, 0.05, 0.15), stats.Estimate(0.9, 0.85, 0.95)
    clear = summary_lines(_fake([("o_proj", "0-1", (0.9, 0.8, 1.0)), ("mlp", "0-1", (0.1, 0.0, 0.2))], lo, hi))
    assert any("o_proj @ layers 0-1 stands out" in s for s in clear)
    foggy = summary_lines(_fake([("o_proj", "0-1", (0.5, 0.1, 0.9)), ("mlp", "0-1", (0.4, 0.0, 0.8))], lo, hi))
    assert any("nothing stands out: the top cell's interval overlaps 1" in s for s in foggy)
    nogap = summary_lines(_fake([("o_proj", "0-1", (0.5, 0.1, 0.9))], lo, lo, gap=(0.0, -0.1, 0.1)))
    assert any("gap's 95% interval includes 0" in s for s in nogap)
    weak = summary_lines(_fake([("o_proj", "0-1", (0.3, -0.1, 0.7))], lo, hi))
    assert any("even the top cell's interval includes 0" in s for s in weak)


def test_windows_and_plan():
    assert windows(10, 4) == ["0-3", "4-7", "8-9"] and windows(3, 1) == ["0", "1", "2"]


def test_bad_inputs_fail_before_loading(tiny_pair, tmp_path):
    base, tuned = tiny_pair("qwen2")
    other, _ = tiny_pair("qwen2", layers=2)
    with pytest.raises(UsageError, match="--window 9 is larger"):
        run_map(small(base, tuned, window=9))
    with pytest.raises(UsageError, match="--problems must be >= 1"):
        run_map(small(base, tuned, problems=0))
    with pytest.raises(SelectorError, match="unknown module kind 'bogus_proj'"):
        run_map(small(base, tuned, modules="o_proj,bogus_proj"))
    with pytest.raises(SelectorError, match="row 'q_norm', layers 0-1: .*matches no tensor"):
        run_map(small(base, tuned, modules="o_proj,q_norm"))  # qwen2 has no q_norm
    with pytest.raises(CheckpointError, match="same architecture and depth"):
        run_map(small(base, other))
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"prompt": "2+2?", "answer": "4", "kind": "poetry"}\n')
    with pytest.raises(DataError, match="kind 'poetry'"):
        run_map(small(base, tuned, task=str(bad)))
    with pytest.raises(DataError, match="task 'nope'"):
        run_map(small(base, tuned, task="nope"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not written by SfN"):
        run_map(small(base, tuned, out=str(foreign)))
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_cli_errors_are_one_line(tiny_pair, tmp_path, capsys):
    from sfn_merge_plugin.cli import main

    base, tuned = tiny_pair("qwen2")
    rc = main(["localize", base, tuned, "-o", str(tmp_path / "m"), "--window", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--window must be >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_jsonl_task_with_its_prompts_and_grader(tiny_pair, tmp_path):
    base, tuned = tiny_pair("qwen2")
    task = tmp_path / "t.jsonl"
    task.write_text('{"prompt": "what is 2+2?", "answer": "4", "kind": "math"}\n{"prompt": "pick", "answer": "B", "kind": "gpqa"}\n')
    result = run_map(small(base, tuned, task=str(task), modules="o_proj", window=4, samples=2, chat_prompts=0))
    r = result.rows()[0]
    assert r.correct.shape == (2, 2) and r.level is None
