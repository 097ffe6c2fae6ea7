"""Exact packs: extract -> apply gives the tensors mergekit-yaml + sfn_swap writes, bit for bit; bad input fails
in one line with nothing written."""

import json
import os

import pytest
import torch

from merge_checks import tensors
from sfn_merge_plugin.cli import main as sfn
from sfn_merge_plugin.packs.apply import apply_pack
from sfn_merge_plugin.packs.extract import extract_exact
from sfn_merge_plugin.packs.manifest import PackError, read_manifest

TINY = dict(layers=2, hidden=32, heads=2, kv_heads=1, intermediate=64)


def swap_recipe(base, donor, modules, layers="all"):
    return {"merge_method": "sfn_swap", "base_model": base, "models": [{"model": donor}],
            "parameters": {"modules": modules, "layers": layers}}


def same_model(a, b):
    """Same tensor names, dtypes and values (bit for bit), and the same config."""
    ta, tb = tensors(a), tensors(b)
    assert set(ta) == set(tb)
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and torch.equal(ta[name], tb[name]), name
    with open(os.path.join(a, "config.json")) as f, open(os.path.join(b, "config.json")) as g:
        assert json.load(f) == json.load(g)


CASES = [  # (arch, tied base, untied fine-tune, modules, layers)
    ("qwen2", False, False, "o_proj,norm", "all"),
    ("qwen2", True, False, "o_proj,norm,embed,lm_head", "all"),  # tied fine-tune: stays tied
    ("qwen2", True, False, "o_proj,lm_head", "all"),  # head only: untied, keeps the base's embedding
    ("qwen2", True, False, "embed", "all"),  # embedding only: untied, head keeps the base's values
    ("qwen2", True, True, "embed,lm_head", "1"),  # untied fine-tune into a tied base
    ("phi3", False, False, "q_proj,o_proj", "0"),  # a fused block: only q's rows move
]


@pytest.mark.parametrize("arch,tied,untie,modules,layers", CASES)
def test_apply_is_sfn_swap_bit_for_bit(tiny_pair, run_recipe, tmp_path, arch, tied, untie, modules, layers):
    base, tuned = tiny_pair(arch, tied=tied, untie=untie, **TINY)
    pack = str(tmp_path / "p.sfnpack")
    m = extract_exact(base, tuned, pack, modules, layers, progress=False)
    res = apply_pack(base, pack, str(tmp_path / "applied"), progress=False)
    reference = run_recipe(swap_recipe(base, tuned, modules, layers), tmp_path / "mergekit")
    same_model(res.out, reference)
    assert res.untied == m.untie


# mergekit_plugin._plan_tensors_mergekit_does_not_know lists tensor names from the slice's FIRST source (the
# donor), through open_checkpoint, which calls a pack holding only some layers an incomplete checkpoint; it
# should list the base's names (the lead's fix, see the packs report)
@pytest.mark.parametrize("arch,tied,untie,modules,layers", CASES)
def test_recipe_with_a_pack_as_donor_is_sfn_swap(tiny_pair, run_recipe, tmp_path, arch, tied, untie, modules, layers):
    base, tuned = tiny_pair(arch, tied=tied, untie=untie, **TINY)
    pack = str(tmp_path / "p.sfnpack")
    extract_exact(base, tuned, pack, modules, layers, progress=False)
    reference = run_recipe(swap_recipe(base, tuned, modules, layers), tmp_path / "mergekit")
    same_model(run_recipe(swap_recipe(base, pack, modules, layers), tmp_path / "via-pack"), reference)


def test_manifest_records_selection_sources_and_checksums(tiny_pair, tmp_path):
    from sfn_merge_plugin.checkpoint import open_checkpoint
    from sfn_merge_plugin.packs.manifest import stored_sha256

    base, tuned = tiny_pair("qwen2", **TINY)
    pack = tmp_path / "p"
    extract_exact(base, tuned, str(pack), "o_proj", progress=False)
    m = read_manifest(pack)
    assert (m.kind, m.modules, m.layers, m.architecture, m.num_layers) == ("exact", "o_proj", "all", "Qwen2ForCausalLM", 2)
    assert [t.name for t in m.tensors] == [f"model.layers.{i}.self_attn.o_proj.weight" for i in range(2)]
    b, t = open_checkpoint(base), open_checkpoint(tuned)
    for e in m.tensors:
        assert e.base_sha256 == stored_sha256(b.tensors[e.name]) != stored_sha256(t.tensors[e.name]) == e.sha256
    assert {"manifest.json", "model.safetensors", "config.json", "README.md"} <= set(os.listdir(pack))


def test_cli_extract_info_apply(tiny_pair, tmp_path, capsys):
    base, tuned = tiny_pair("qwen2", **TINY)
    pack, out = str(tmp_path / "r.sfnpack"), str(tmp_path / "merged")
    assert sfn(["pack", "extract", base, tuned, "--modules", "o_proj,norm", "-o", pack, "--no-progress"]) == 0
    assert sfn(["pack", "info", pack, "--verify"]) == 0
    text = capsys.readouterr().out
    assert "exact pack" in text and "o_proj 2" in text and "verified" in text
    assert sfn(["pack", "apply", base, pack, "-o", out, "--no-progress"]) == 0
    t, b, d = tensors(out), tensors(base), tensors(tuned)
    for name in t:
        src = d if ("o_proj" in name or "norm" in name) else b
        assert torch.equal(t[name], src[name]), name


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture
def made_pack(tiny_pair, tmp_path):
    base, tuned = tiny_pair("qwen2", **TINY)
    pack = tmp_path / "p"
    extract_exact(base, tuned, str(pack), "o_proj", progress=False)
    return base, tuned, pack


def fails(capsys, argv, *words):
    assert sfn(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sfn pack: error:"), err
    for w in words:
        assert w in err, err
    return err


def test_wrong_base_is_refused_before_writing(made_pack, tiny_model, tmp_path, capsys):
    base, tuned, pack = made_pack
    other = tiny_model("qwen2", seed=5, **TINY)  # same shapes, other values
    out = tmp_path / "out"
    fails(capsys, ["pack", "apply", other, str(pack), "-o", str(out), "--no-progress"],
          "model.layers.0.self_attn.o_proj.weight", "SHA-256", "nothing was written")
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if "sfn-tmp" in p]
    fails(capsys, ["pack", "apply", tuned, str(pack), "-o", str(out)], "not the pack's base")


def test_other_architecture_or_shape_is_refused(made_pack, tiny_model, tmp_path, capsys):
    _, _, pack = made_pack
    fails(capsys, ["pack", "apply", tiny_model("llama", **TINY), str(pack), "-o", str(tmp_path / "o")], "LlamaForCausalLM")
    wide = tiny_model("qwen2", layers=2, hidden=64, heads=2, kv_heads=1, intermediate=64)
    fails(capsys, ["pack", "apply", wide, str(pack), "-o", str(tmp_path / "o")], "o_proj.weight", "[64, 64]")
    assert not (tmp_path / "o").exists()


def test_truncated_or_edited_pack_is_refused(made_pack, tmp_path, capsys):
    import shutil

    base, _, pack = made_pack
    cut = tmp_path / "cut"
    shutil.copytree(pack, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    fails(capsys, ["pack", "apply", base, str(cut), "-o", str(tmp_path / "o")], "truncated")
    edited = tmp_path / "edited"
    shutil.copytree(pack, edited)
    doc = json.loads((edited / "manifest.json").read_text())
    doc["tensors"][1]["sha256"] = "0" * 64
    (edited / "manifest.json").write_text(json.dumps(doc))
    fails(capsys, ["pack", "apply", base, str(edited), "-o", str(tmp_path / "o")], "does not match its SHA-256")
    doc["tensors"] = doc["tensors"][:1]
    (edited / "manifest.json").write_text(json.dumps(doc))
    fails(capsys, ["pack", "info", str(edited), "--verify"], "manifest does not match", "layers.1")
    assert not (tmp_path / "o").exists()


def test_selector_matching_nothing_and_used_output(tiny_pair, tmp_path, capsys):
    base, tuned = tiny_pair("qwen2", **TINY)
    fails(capsys, ["pack", "extract", base, tuned, "--modules", "q_norm", "-o", str(tmp_path / "p")], "q_norm", "matches no")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    fails(capsys, ["pack", "extract", base, tuned, "--modules", "o_proj", "-o", str(tmp_path / "busy")], "--force")
    assert not (tmp_path / "p").exists()


def test_recipe_with_a_pack_donor_checks_the_base(made_pack, tiny_model, run_recipe, tmp_path):
    from sfn_merge_plugin.planning import RecipeError

    _, _, pack = made_pack
    other = tiny_model("qwen2", seed=5, **TINY)
    with pytest.raises(RecipeError, match="SHA-256"):
        run_recipe(swap_recipe(other, str(pack), "o_proj"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
