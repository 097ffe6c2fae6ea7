"""`sfn lab --smoke`: the whole pipeline once, then checks that the report holds every section and that
each stage's numbers are the ones its tool wrote (delta summary, merged tensors, freeze reports, sweep CSV)."""

import csv
import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file

from sfn_merge_plugin.cli import main


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    out = root / "lab"
    rc = main(["lab", "--smoke", "-o", str(out), "--cache-dir", str(root / "cache"), "--keep-models", "--quiet"])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_every_file_and_section_is_there(lab):
    out, results = lab
    for name in ("results.json", "verdict.json", "report.md", "report.html", "pairs.csv", "regime.csv",
                 "table1_merge.csv", "table2_freeze.csv", "table3_destruction.csv"):
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]  # built aside, renamed into place
    md = (out / "report.md").read_text()
    headings = re.findall(r"^#+ (.+)$", md, flags=re.M)
    for h in ("Verdict", "1. The pairs", "2. Delta Stethoscope", "3. Merge Stethoscope (Table 1)",
              "4. Freeze Stethoscope (Table 2, Fig. 6)", "5. Destruction Stethoscope (Table 3)", "Reproduce"):
        assert h in headings
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / image).is_file(), image
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(re.findall(r"!\[", md))  # every figure embedded
    assert not re.search(r"<img src='(?!data:)", html)


def test_verdict_says_plainly_why_there_is_no_conclusion(lab):
    out, results = lab
    verdict = json.loads((out / "verdict.json").read_text())
    assert set(verdict) == {"new_circuit", "skill"}
    for v in verdict.values():  # smoke pairs fail their loss checks: nothing may be concluded from them
        assert v["trusted"] is False and v["answer"] == "inconclusive"
        assert "loss check" in v["why"][0]
    md = (out / "report.md").read_text()
    assert "**new_circuit: no conclusion about o_proj.**" in md and "Smoke size" in md


def test_pairs_stage_records_training_and_evaluation(lab):
    _, results = lab
    assert set(results["pairs"]) == {"new_circuit-s0", "skill-s0"}
    for pid, entry in results["pairs"].items():
        assert set(entry) == {"pairs", "delta", "merge", "freeze", "destruction"}
        p = entry["pairs"]
        assert p["training"]["reasoning"]["check"] and p["training"]["trusted"] is False
        for role in ("base", "reasoning"):
            ev = p["eval"][role]
            assert set(ev) == {"chat", "plain", "forced"}
            assert ev["chat"]["n"] == results["settings"]["heldout_problems"]
            assert ev["chat"]["n_probes"] == results["settings"]["chat_probes"]


def test_delta_numbers_are_the_delta_tool_summary(lab):
    out, results = lab
    for pid, entry in results["pairs"].items():
        summary = json.loads((out / "delta" / pid / "summary.json").read_text())
        per_kind = summary["pairs"][0]["per_kind"]
        for kind, values in entry["delta"]["per_kind"].items():
            assert values["rel_delta"] == per_kind[kind]["rel_delta"]
        assert entry["delta"]["claims"] == summary["pairs"][0]["claims"]
        assert (out / "delta" / pid / "delta_norms.png").is_file()


def test_merged_models_are_the_swaps_mergekit_wrote(lab):
    out, results = lab
    entry = results["pairs"]["skill-s0"]
    base = load_file(os.path.join(entry["pairs"]["base"], "model.safetensors"))
    reasoning = load_file(os.path.join(entry["pairs"]["reasoning"], "model.safetensors"))
    patterns = {"o_proj": r"\.o_proj\.", "q,k,v_proj": r"\.[qkv]_proj\.", "mlp": r"\.mlp\."}
    for label, row in entry["merge"]["rows"].items():
        merged = load_file(os.path.join(row["model"], "model.safetensors"))
        assert merged.keys() == base.keys()
        swapped = {n for n in base if re.search(patterns[label], n)}
        for name in base:
            expected = reasoning[name] if name in swapped else base[name]
            assert torch.equal(merged[name], expected), (label, name)
        provenance = json.loads(open(row["provenance"]).read())
        assert {n for n, t in provenance["tensors"].items() if t["source"] == "donor"} == swapped
        assert row["tensors_from_reasoning"] == len(swapped)
        recipe = open(row["recipe"]).read()
        assert "merge_method: sfn_swap" in recipe and "dtype: float32" in recipe
        assert entry["pairs"]["base"] in recipe  # absolute local paths, rerunnable with mergekit-yaml


def test_freeze_runs_are_the_shipped_recipes_and_train_only_their_selection(lab):
    import yaml

    from sfn_merge_plugin.freeze.configs import load_recipe

    out, results = lab
    for pid, entry in results["pairs"].items():
        rows = entry["freeze"]["rows"]
        assert list(rows) == ["emb_head", "oproj", "qkvo", "all"]
        counts = {}
        for preset, runs in rows.items():
            assert len(runs) == results["settings"]["freeze_seeds"]
            for run in runs:
                report = json.loads(open(run["freeze_report"]).read())  # written by SfN's FreezeCallback
                assert run["trainable_parameters"] == report["parameters"]["trainable"]
                assert report["optimizer_check"]["ok"] and run["optimizer_owns_exactly_trainable"]
                assert run["moved"]["frozen_changed"] == [] and run["moved"]["comparison"] == "bit for bit"
                assert run["moved"]["trainable_changed"] > 0
                assert len(run["curve"]) == run["steps"]
                recipe = yaml.safe_load(open(run["recipe"]))
                shipped = load_recipe(preset)
                assert recipe["model_init_kwargs"] == shipped["model_init_kwargs"]
                for key in ("lr_scheduler_type", "weight_decay", "adam_beta1", "adam_beta2", "completion_only_loss"):
                    assert recipe[key] == shipped[key], key
                counts[preset] = run["trainable_parameters"]
        assert counts["emb_head"] < counts["oproj"] < counts["qkvo"] < counts["all"]


def test_destruction_table_is_the_sweep_csv(lab):
    out, results = lab
    for pid, entry in results["pairs"].items():
        with open(out / "destruction" / pid / "table3.csv") as f:
            rows = list(csv.DictReader(f))
        table = entry["destruction"]["table"]
        assert [(r["module"], r["method"], r["conversation_level"]) for r in rows] == \
               [(r["module"], r["method"], r["conversation_level"]) for r in table]
        methods = {r["method"] for r in table}
        assert methods == {"-", "zero", "reinit", "remove"}
        # Qwen2 o_proj has no bias: zeroing v_proj (with its bias) or o_proj both silence the attention branch
        same = [c["cells"] for c in entry["destruction"]["classes"]]
        assert any({"zero(v_proj)@1", "zero(o_proj)@1"} <= set(c) for c in same)


def test_tables_are_csv_of_the_report(lab):
    out, results = lab
    with open(out / "table1_merge.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["pair"] for r in rows} == {"new_circuit", "skill"}
    assert [r["replaced module"] for r in rows if r["pair"] == "skill"] == ["-", "-", "o_proj", "q,k,v_proj", "mlp"]
    with open(out / "table2_freeze.csv") as f:
        assert len(list(csv.DictReader(f))) == 8


def test_kept_files_point_at_the_final_folder(lab):
    """Recipes, model cards and CSVs of a lab folder built under a temporary name name the final folder,
    and tables hold numbers (a mean and its stderr in two columns)."""
    import stat

    out, results = lab
    kept = [p for p in out.rglob("*") if p.is_file() and (p.name in ("recipe.yaml", "results.json", "report.md")
                                                          or p.suffix in (".yml", ".csv"))]
    assert len([p for p in kept if p.name == "recipe.yaml"]) == 16
    for path in kept:
        assert ".sfn-tmp-" not in path.read_text(errors="replace"), path
    recipe = yaml_load(out / "freeze" / "skill-s0" / "oproj-seed0" / "recipe.yaml")
    assert recipe["output_dir"] == str(out / "freeze" / "skill-s0" / "oproj-seed0")
    assert str(out / "freeze" / "skill-s0" / "data.jsonl") in json.dumps(recipe)  # the data file, wherever TRL keeps it
    for row in results["pairs"]["skill-s0"]["merge"]["rows"].values():
        mode = stat.S_IMODE(os.stat(row["model"]).st_mode)
        assert mode & 0o055 == 0o055 & ~_umask(), oct(mode)  # not 0700: readable like any folder the user makes
    with open(out / "table1_merge.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["accuracy"]) >= 0 and float(r["accuracy stderr"]) >= 0 for r in rows)
    md = (out / "report.md").read_text()
    assert "stethoscopes run: delta, merge, freeze, destruction" in md.lower()


def yaml_load(path):
    import yaml

    return yaml.safe_load(open(path))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_merge_rows_are_measured_in_memory_and_each_pair_has_its_map(lab):
    """Table 1 rows come from the intervention engine (mergekit only writes the kept models); each pair's
    localization map is in the lab folder and its heatmaps and summary are in the report."""
    out, results = lab
    md = (out / "report.md").read_text()
    for pid, entry in results["pairs"].items():
        for row in entry["merge"]["rows"].values():
            assert row["engine"].startswith("in memory") and row["tensors_from_reasoning"] > 0
        m = entry["merge"]["localize"]
        with open(out / "merge" / pid / "localize" / "map.csv") as f:
            cells = list(csv.DictReader(f))
        measured = [c for c in cells if c["module"] not in ("none", "all")]
        assert len(measured) == len(m["cells"]) > 0
        assert {c["direction"] for c in measured} == {"sufficiency", "necessity"}
        assert [os.path.basename(p) for p in m["figures"]] == ["sufficiency.png", "necessity.png"]
        for p in m["figures"]:
            assert os.path.relpath(p, out) in md
        assert f"### {pid}: localization map" in md and m["summary_lines"][0].strip() in md


def test_pack_rank_curve_per_pair(lab):
    """base + o_proj pack at each LoRA rank; the exact pack scores what Table 1's o_proj swap row scored."""
    _, results = lab
    ranks = list(results["pairs"]["skill-s0"]["merge"]["packs"]["rows"][i]["rank"] for i in range(2, 4))
    assert ranks == [1, 4]
    for entry in results["pairs"].values():
        packs = entry["merge"]["packs"]
        exact = [r for r in packs["rows"] if r["pack"] == "exact"][0]
        assert exact["accuracy"] == entry["merge"]["rows"]["o_proj"]["eval"]["accuracy"]
        assert exact["kept_energy"] == 1.0
        lora = [r for r in packs["rows"] if r["pack"] == "lora"]
        assert 0 < lora[0]["kept_energy"] <= lora[1]["kept_energy"] <= 1.0
        assert 0 < lora[0]["size_bytes"] < lora[1]["size_bytes"]
