"""Hot swap: one loaded base, several packs, switched per call; leaving restores every parameter bit for bit."""

import pytest
import torch

from merge_checks import tensors
from sfn_merge_plugin.packs.apply import apply_pack
from sfn_merge_plugin.packs.extract import extract_exact
from sfn_merge_plugin.packs.hotswap import PackSet
from sfn_merge_plugin.packs.lora import extract_lora
from sfn_merge_plugin.packs.manifest import PackError

TINY = dict(layers=2, hidden=32, heads=2, kv_heads=1, intermediate=64)
IDS = torch.tensor([[3, 10, 20, 30, 1]])


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_same(model, snap):
    now = dict(model.named_parameters())
    assert set(now) == set(snap)
    for n, p in now.items():
        assert p.dtype == snap[n].dtype and torch.equal(p, snap[n]), n


def load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()


@pytest.mark.parametrize("tied,modules", [(False, "o_proj,norm"), (True, "o_proj,lm_head")])
def test_switching_packs_matches_applied_models_and_restores_the_base(tiny_pair, tmp_path, one_torch_thread, tied, modules):
    base, tuned = tiny_pair("qwen2", tied=tied, **TINY)
    exact, lora = str(tmp_path / "exact"), str(tmp_path / "lora")
    extract_exact(base, tuned, exact, modules, progress=False)
    extract_lora(base, tuned, lora, "o_proj", rank=3, progress=False)
    merged = {k: apply_pack(base, p, str(tmp_path / f"m-{k}"), progress=False).out for k, p in (("exact", exact), ("lora", lora))}
    model = load(base)
    before = snapshot(model)
    with torch.no_grad():
        base_logits = model(IDS).logits
    packs = PackSet(model)
    packs.attach("exact", exact)
    packs.attach("lora", lora)
    assert_same(model, before)  # attaching changes nothing
    for _ in range(2):
        for name in ("exact", "lora", "exact"):
            with packs.active(name), torch.no_grad():
                got = model(IDS).logits
                ref = load(merged[name])
                want = ref(IDS).logits
                files = tensors(merged[name])
                for n, p in model.named_parameters():  # the active model holds the applied folder's values
                    assert torch.equal(p, files[n]), n
            assert torch.equal(got, want)
            assert_same(model, before)
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, base_logits)
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight  # tied again after an untied pack


def test_attach_refuses_a_wrong_base_and_misuse(tiny_pair, tiny_model, tmp_path):
    base, tuned = tiny_pair("qwen2", **TINY)
    pack = str(tmp_path / "p")
    extract_exact(base, tuned, pack, "o_proj", progress=False)
    other = load(tiny_model("qwen2", seed=5, **TINY))
    with pytest.raises(PackError, match="differs from the base"):
        PackSet(other).attach("p", pack)
    from transformers import AutoModelForCausalLM

    wrong_dtype = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    with pytest.raises(PackError, match="stored dtype"):
        PackSet(wrong_dtype).attach("p", pack)
    packs = PackSet(load(base))
    packs.attach("p", pack)
    with pytest.raises(PackError, match="attached already"):
        packs.attach("p", pack)
    with pytest.raises(PackError, match="no pack named 'q'"):
        with packs.active("q"):
            pass
    with packs.active("p"):
        with pytest.raises(PackError, match="one at a time"):
            with packs.active("p"):
                pass


def test_sfn_hf_evaluates_base_plus_pack_in_memory(tiny_pair, tmp_path, one_torch_thread):
    from sfn_merge_plugin.evaluation.lm_eval_models import SfnHFLM

    base, tuned = tiny_pair("qwen2", **TINY)
    pack = str(tmp_path / "p")
    extract_exact(base, tuned, pack, "o_proj,norm", progress=False)
    merged = apply_pack(base, pack, str(tmp_path / "merged"), progress=False).out
    lm = SfnHFLM(pretrained=base, pack=pack, device="cpu", dtype="auto", batch_size=1)
    files = tensors(merged)
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, files[n]), n
    with pytest.raises(PackError, match="neither"):
        SfnHFLM(pretrained=base, pack=str(tmp_path), device="cpu")
