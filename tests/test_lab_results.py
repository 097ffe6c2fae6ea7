"""The lab's results file, its scoped environment, its numeric tables, and docs generated from the
committed results (no models trained here: seconds)."""

import json
import logging
import os

import pytest
import torch

from sfn_merge_plugin.errors import DataError
from sfn_merge_plugin.lab import docs, tables, verdict
from sfn_merge_plugin.lab.environment import run_environment
from sfn_merge_plugin.lab.results import FORMAT, LabResults, Settings
from sfn_merge_plugin.lab.stages import format_layers, selected_layers


def _results(tmp_path) -> LabResults:
    folder = str(tmp_path / "work")
    pairs = {"skill-s0": {"delta": {"folder": folder + "/delta/skill-s0", "figures": [folder + "/delta/x.png"]},
                          "freeze": {"rows": {"oproj": [{"recipe": folder + "/freeze/r.yaml",
                                                         "shipped_recipe": "/pkg/oproj.yaml"}]}}}}
    return LabResults(Settings(size="smoke", seeds=[0], torch_threads=1), pairs, {"total": 1.0})


def test_results_round_trip_and_paths_follow_the_folder(tmp_path):
    r = _results(tmp_path)
    final = tmp_path / "lab"
    (tmp_path / "work").mkdir()
    r.write(tmp_path / "work", publish=final)
    os.rename(tmp_path / "work", final)  # what staged_folder does
    doc = json.loads((final / "results.json").read_text())
    assert doc["format"] == FORMAT and doc["settings"]["output"] == str(final)
    assert doc["pairs"]["skill-s0"]["delta"]["folder"] == str(final / "delta" / "skill-s0")
    assert doc["pairs"]["skill-s0"]["freeze"]["rows"]["oproj"][0]["recipe"] == str(final / "freeze" / "r.yaml")
    assert doc["pairs"]["skill-s0"]["freeze"]["rows"]["oproj"][0]["shipped_recipe"] == "/pkg/oproj.yaml"
    moved = tmp_path / "moved"
    os.rename(final, moved)  # a lab folder moved after the run still points inside itself
    back = LabResults.read(moved)
    assert back.pairs["skill-s0"]["delta"]["figures"] == [str(moved / "delta" / "x.png")]
    assert back.settings == Settings(**dict(doc["settings"], output=str(moved)))
    assert back.ran("skill-s0") == ["delta", "freeze"]


@pytest.mark.parametrize("text, needle", [('{"format": "other"}', "not a lab results file"), ("{", "not valid JSON")])
def test_results_that_are_not_a_lab_file(tmp_path, text, needle):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(DataError, match=needle):
        LabResults.read(tmp_path)


def test_environment_is_restored_after_the_run_even_on_error():
    import matplotlib

    before = (torch.get_num_threads(), os.environ.get("HF_DATASETS_OFFLINE"), logging.getLogger("mergekit").level,
              matplotlib.get_backend())
    os.environ.pop("HF_DATASETS_OFFLINE", None)
    logging.getLogger("mergekit").setLevel(logging.DEBUG)
    try:
        with pytest.raises(RuntimeError):
            with run_environment(threads=1 if torch.get_num_threads() != 1 else 2):
                assert os.environ["HF_DATASETS_OFFLINE"] == "1"
                assert logging.getLogger("mergekit").level == logging.WARNING
                assert matplotlib.get_backend().lower() == "agg"
                raise RuntimeError("stage failed")
        assert torch.get_num_threads() == before[0]
        assert "HF_DATASETS_OFFLINE" not in os.environ
        assert logging.getLogger("mergekit").level == logging.DEBUG
        assert matplotlib.get_backend() == before[3]
    finally:
        logging.getLogger("mergekit").setLevel(before[2])
        if before[1] is not None:
            os.environ["HF_DATASETS_OFFLINE"] = before[1]


def test_tables_hold_numbers_and_the_report_folds_the_stderr():
    t = tables.Table(["model", "accuracy", "accuracy stderr", "share"], [["base", 0.16, 0.026, 0.5], ["x", None, None, None]],
                     pm={"accuracy": "accuracy stderr"}, formats={"accuracy": "{:.3f}", "share": "{:.0%}"})
    assert t.column("accuracy stderr") == [0.026, None]
    head, rows = tables.display(t)
    assert head == ["model", "accuracy", "share"]
    assert rows == [["base", "0.160 ± 0.026", "50%"], ["x", "-", "-"]]


def _claim(kind, value, runner_up, runner_value):
    ratio = None if runner_value == 0 else value / runner_value
    return {"measured": True, "kind": kind, "value": value, "runner_up": runner_up, "runner_up_value": runner_value,
            "ratio": ratio, "o_proj_rank": 1, "holds": kind == "o_proj" and (ratio is None or ratio >= 2)}


def test_claims_table_shows_ranking_and_ratio():
    results = {"pairs": {"skill-s0": {"delta": {"claims": {
        "largest_mean_delta_norm": _claim("mlp", 3.0, "o_proj", 1.5),
        "largest_mean_rel_delta": _claim("o_proj", 0.2, "q_proj", 0.0),
        "o_proj_bimodal": {"measured": False, "reason": "x"}}}}}}
    t = tables.claims_table(results)
    norm, rel, bim = t.rows
    assert norm[2:] == ["mlp", 3.0, "o_proj", 1.5, 2.0, 1, False]
    assert rel[6] == float("inf") and rel[-1] is True
    head, rows = tables.display(t)
    assert rows[0][head.index("ratio")] == "2.00x" and rows[1][head.index("ratio")] == "inf"
    assert bim[2:] == [None] * 7


def test_verdict_says_which_stethoscopes_ran():
    only_merge = [{"pairs": {}, "delta": {}, "merge": {}}]
    note = verdict.stages_note(only_merge)
    assert "run: Delta, Merge" in note and "not run: Freeze, Destruction" in note and "Merge alone" in note
    assert "alone" not in verdict.stages_note([{"pairs": {}, "merge": {}, "freeze": {}}])


def test_fractional_layers_print_what_they_select(tiny_model):
    path = tiny_model(layers=10)
    assert selected_layers(path, "0.5-0.8") == [5, 6, 7]
    assert format_layers([5, 6, 7]) == "5-7" and format_layers([0, 1, 5]) == "0-1,5"


def _lab_results(tmp_path):
    """A results file as the lab writes it, from hand-made entries (test_lab_report's shapes)."""
    from test_lab_report import FREEZE_OPROJ, SWAPS_OPROJ, _entry

    doc = {"format": FORMAT, "timing": {"train_pairs": 300.0, "merge": 20.0, "total": 420.0},
           "pairs": {"skill-s0": _entry("skill", 0, 0.1, 1.0, SWAPS_OPROJ, FREEZE_OPROJ),
                     "new_circuit-s0": _entry("new_circuit", 0, 0.14, 1.0, {"o_proj": 0.1, "q,k,v_proj": 0.0,
                                                                            "mlp": 0.0}, regime="new circuit")},
           "settings": {"size": "full", "seeds": [0], "command": "sfn lab -o OUT --seeds 0 --threads 2",
                        "torch_threads": 2, "machine": "x86_64, 2 CPUs", "sfn_version": "0", "torch_version": "2",
                        "swaps": [["o_proj", "o_proj"], ["q,k,v_proj", "qkv"], ["mlp", "mlp"]],
                        "freeze_rows": ["emb_head", "oproj", "qkvo", "all"],
                        "environment": {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "transformers": "5"}}}
    path = tmp_path / "lab_seed0.json"
    path.write_text(json.dumps(doc))
    return path


def test_docs_blocks_are_rendered_and_a_hand_edit_is_caught(tmp_path):
    results_file = _lab_results(tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- sfn:lab-begin time -->\nold 8.8 min\n<!-- sfn:lab-end time -->\n"
                   "<!-- sfn:lab-begin results -->\n<!-- sfn:lab-end results -->\n"
                   "<!-- sfn:lab-begin readme -->\n<!-- sfn:lab-end readme -->\nend\n")
    assert docs.differences([doc], results_file) == [str(doc)]
    assert docs.write([doc], results_file) == [str(doc)]
    text = doc.read_text()
    assert "old 8.8 min" not in text and "| total | 7.0 min |" in text and "about 2.0 min" in text
    assert "| base + reasoning's o_proj (share of the gap) | 0.90 (89%) | 0.10 (-5%) |" in text
    assert "Emb+Head / +o_proj / +q,k,v,o / all | 0.15 / 0.95 / 0.97 / 1.00 | not run |" in text
    assert "`sfn lab -o OUT --seeds 0 --threads 2` on AMD EPYC" in text and "2 torch threads" in text
    assert "*skill* (small change, chat accuracy 0.10 -> 1.00): o_proj localizes reasoning" in text
    assert text.startswith("intro\n") and text.endswith("<!-- sfn:lab-end readme -->\nend\n")
    assert docs.differences([doc], results_file) == []
    doc.write_text(text.replace("| total | 7.0 min |", "| total | 1.0 min |"))  # a hand edit
    assert docs.differences([doc], results_file) == [str(doc)]
    bad = tmp_path / "bad.md"
    bad.write_text("<!-- sfn:lab-begin nope -->\n<!-- sfn:lab-end nope -->\n")
    with pytest.raises(DataError, match="unknown lab docs block 'nope'"):
        docs.differences([bad], results_file)


def test_committed_docs_match_the_committed_results():
    """README.md and docs/lab.md: every lab number is the generator's, from docs/results/lab_seed0.json."""
    if not docs.RESULTS_FILE.is_file():
        pytest.skip("docs/results/lab_seed0.json is not committed yet (see docs/lab.md, 'Numbers that reproduce')")
    assert docs.differences() == []
    results = docs.load()
    s = results["settings"]
    assert s["command"].startswith("sfn lab") and s["seeds"] == [0] and s["torch_threads"] >= 1
    assert s["environment"]["torch"] and s["environment"]["cpu_capability"]
    assert "<!-- sfn:lab-begin results -->" in (docs.REPO / "docs" / "lab.md").read_text()


def test_delta_console_claim_when_nothing_else_moved():
    from sfn_merge_plugin.delta.report import claim_lines

    claims = {"largest_mean_delta_norm": _claim("o_proj", 0.5, "q_proj", 0.0),
              "largest_mean_rel_delta": _claim("o_proj", 0.2, "mlp", 0.05),
              "o_proj_bimodal": {"measured": False, "reason": "one layer"}}
    lines = claim_lines(claims)
    assert "no other linear module moved (runner-up q_proj 0)" in lines[1] and "inf" not in lines[1]
    assert "4.00x the runner-up mlp (0.05)" in lines[2]
