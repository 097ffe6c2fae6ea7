"""The intervention engine: a swap cell holds exactly what mergekit-yaml + sfn_swap writes (tied, untied,
fused blocks, both directions), destroy/remove compose with it, and every edit is undone bit for bit."""

import pytest
import torch

from merge_checks import tensors
from sfn_merge_plugin import intervention as iv
from sfn_merge_plugin.errors import CheckpointError, SelectorError
from sfn_merge_plugin.selectors import select
from sfn_merge_plugin.sweep import runner


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_torch_thread):
    """Tiny models run much faster on one thread of a shared machine."""


IDS = [[3, 40, 41, 42, 17, 99, 5, 200, 1, 7]]


def load(path):
    return runner.load(path, device="cpu")[0]


def logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits


def snapshot(model):
    return {n: (p.detach().clone(), p.data_ptr()) for n, p in model.named_parameters()}


def swap_recipe(base, donor, modules, layers):
    return {"merge_method": "sfn_swap", "base_model": base, "models": [{"model": donor}],
            "parameters": {"modules": modules, "layers": layers}}


def assert_holds(model, written):
    """The live model holds every written tensor bit for bit; a tied head is tied iff nothing wrote lm_head."""
    live = dict(model.named_parameters())
    head = model.get_output_embeddings().weight
    for name, t in written.items():
        p = head if name == "lm_head.weight" else live[name]
        assert p.dtype == t.dtype and torch.equal(p.detach(), t), name
    if "lm_head.weight" not in written:
        assert head is model.get_input_embeddings().weight


CASES = [  # (arch, pair kwargs, modules, layers)
    ("qwen2", {}, "o_proj", "1-2"),
    ("llama", {"bias": True, "dtype": "bfloat16"}, "attn,mlp", "0,3"),
    ("phi3", {}, "q_proj", "all"),  # one block of the fused qkv_proj
    ("phi3", {}, "up_proj,v_proj", "2"),  # blocks of gate_up_proj and qkv_proj
    ("gpt2", {}, "k_proj,o_proj", "1"),  # Conv1D fused c_attn block + biases
    ("qwen2", {"untie": True, "tied": True}, "o_proj,lm_head", "all"),  # tied base, untied donor: untied output
    ("qwen2", {"untie": True, "tied": True}, "embed", "all"),  # tied base, embed only: head keeps the base's
    ("qwen2", {"untie": True, "tied": True}, "embed,lm_head", "all"),  # both from an untied donor
    ("qwen2", {"untie": True, "tied": True}, "o_proj", "all"),  # stays tied
]


@pytest.mark.parametrize("arch,kwargs,modules,layers", CASES)
def test_swap_cell_equals_sfn_swap_output_bit_for_bit(tiny_pair, run_recipe, arch, kwargs, modules, layers):
    base, donor = tiny_pair(arch, **kwargs)
    out = run_recipe(swap_recipe(base, donor, modules, layers))
    written = tensors(out)
    model = load(base)
    before, ref = snapshot(model), logits(model)
    layout = iv.model_layout(model)
    edit = iv.swap_edit(model, layout, select(layout, modules, layers), iv.Donor(donor))
    with iv.intervene(model, edit, layout):
        assert_holds(model, written)
        assert torch.equal(logits(model), logits(load(out)))  # the very model mergekit wrote
        assert not torch.equal(logits(model), ref)
    after = snapshot(model)
    assert all(torch.equal(after[n][0], t) and after[n][1] == ptr for n, (t, ptr) in before.items())
    assert torch.equal(logits(model), ref)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight or not model.config.tie_word_embeddings


def test_lm_head_from_a_tied_donor_and_both_from_it_stay_tied(tiny_pair, run_recipe):
    tied_donor, _ = tiny_pair("qwen2", tied=True)
    untied_base, _ = tiny_pair("qwen2")
    written = tensors(run_recipe(swap_recipe(untied_base, tied_donor, "lm_head", "all")))
    model = load(untied_base)
    layout = iv.model_layout(model)
    with iv.intervene(model, iv.swap_edit(model, layout, select(layout, "lm_head"), iv.Donor(tied_donor)), layout):
        assert_holds(model, written)
    # a tied base with embed+lm_head from a tied donor: still one tensor, the donor's embedding
    tied_base, _ = tiny_pair("qwen2", tied=True, seed=3)
    model = load(tied_base)
    layout = iv.model_layout(model)
    with iv.intervene(model, iv.swap_edit(model, layout, select(layout, "embed,lm_head"), iv.Donor(tied_donor)), layout):
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
        assert torch.equal(model.get_input_embeddings().weight, tensors(tied_donor)["model.embed_tokens.weight"])


def test_revert_direction_is_a_swap_from_the_base(tiny_pair, run_recipe):
    base, tuned = tiny_pair("phi3")
    written = tensors(run_recipe(swap_recipe(tuned, base, "qkv,down_proj", "1-3")))
    model = load(tuned)
    layout = iv.model_layout(model)
    with iv.intervene(model, iv.swap_edit(model, layout, select(layout, "qkv,down_proj", "1-3"), iv.Donor(base)), layout):
        assert_holds(model, written)


def test_all_modules_swapped_is_the_donor_and_none_is_the_base(tiny_pair):
    base, tuned = tiny_pair("llama")
    model, ref_tuned = load(base), logits(load(tuned))
    ref_base = logits(model)
    layout = iv.model_layout(model)
    everything = [s for s in select(layout, "re:.")]
    with iv.intervene(model, iv.swap_edit(model, layout, everything, iv.Donor(tuned)), layout):
        assert torch.equal(logits(model), ref_tuned)
    with iv.intervene(model, iv.Edit(), layout):
        assert torch.equal(logits(model), ref_base)


def test_accelerator_path_keeps_a_host_copy_and_restores(tiny_pair, monkeypatch):
    """The in-place path (used on cuda) exercised on the CPU: values written into the same storage, then back."""
    base, tuned = tiny_pair("qwen2")
    monkeypatch.setattr(iv, "_in_place", lambda p: True)
    model = load(base)
    before, ref = snapshot(model), logits(model)
    layout = iv.model_layout(model)
    edit = iv.swap_edit(model, layout, select(layout, "mlp", "0-1"), iv.Donor(tuned))
    with iv.intervene(model, edit, layout):
        name = "model.layers.0.mlp.down_proj.weight"
        p = dict(model.named_parameters())[name]
        assert p.data_ptr() == before[name][1] and torch.equal(p.detach(), tensors(tuned)[name])
    after = snapshot(model)
    assert all(torch.equal(after[n][0], t) and after[n][1] == ptr for n, (t, ptr) in before.items())
    assert torch.equal(logits(model), ref)


def test_edits_compose_and_restore_after_an_error(tiny_pair):
    base, tuned = tiny_pair("qwen2")
    model = load(base)
    before, ref = snapshot(model), logits(model)
    layout = iv.model_layout(model)
    edit = (iv.swap_edit(model, layout, select(layout, "o_proj"), iv.Donor(tuned))
            + iv.destroy_edit(model, layout, select(layout, "q_proj", "0"), "zero")
            + iv.remove_edit(layout, "3"))
    assert edit.skip_layers == (3,)
    with pytest.raises(RuntimeError, match="boom"):
        with iv.intervene(model, edit, layout):
            assert len(iv.layer_list(model)[2]) == 3
            assert torch.equal(dict(model.named_parameters())["model.layers.0.self_attn.q_proj.weight"],
                               torch.zeros(64, 64))
            raise RuntimeError("boom")
    after = snapshot(model)
    assert all(torch.equal(after[n][0], t) and after[n][1] == ptr for n, (t, ptr) in before.items())
    assert len(iv.layer_list(model)[2]) == 4 and torch.equal(logits(model), ref)
    with pytest.raises(SelectorError, match="both replace"):
        iv.swap_edit(model, layout, select(layout, "o_proj", "1"), iv.Donor(tuned)) + iv.destroy_edit(
            model, layout, select(layout, "o_proj"), "zero")


def test_donor_of_another_shape_or_depth_is_refused(tiny_pair):
    base, _ = tiny_pair("qwen2")
    other, _ = tiny_pair("qwen2", layers=2)
    layout = iv.model_layout(load(base))
    with pytest.raises(CheckpointError, match="same architecture and depth"):
        iv.Donor(other).check_matches(layout)
    iv.Donor(base).check_matches(layout)
