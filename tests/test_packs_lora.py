"""LoRA packs: a PEFT adapter PEFT loads, whose logits are base + U_r S_r V_r^T; energy and rank rules; apply."""

import json
import os

import pytest
import torch

from merge_checks import tensors
from sfn_merge_plugin.cli import main as sfn
from sfn_merge_plugin.packs.lora import choose_rank, extract_lora, low_rank

TINY = dict(layers=2, hidden=32, heads=2, kv_heads=1, intermediate=64)
IDS = torch.tensor([[3, 10, 20, 30, 1, 7, 9]])


def logits_with(folder, replace):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in replace.items():
            params[name].copy_(value)
        return model(IDS).logits


def truncated(base_t, tuned_t, r):
    """W + U_r S_r V_r^T, written independently of the package."""
    d = tuned_t.float() - base_t.float()
    U, S, Vh = torch.linalg.svd(d, full_matrices=False)
    return base_t.float() + U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]


def test_peft_loads_the_adapter_and_matches_base_plus_truncated_delta(tiny_pair, tmp_path, one_torch_thread):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, tuned = tiny_pair("qwen2", **TINY)
    pack = str(tmp_path / "lora")
    reports = extract_lora(base, tuned, pack, "o_proj,q_proj,norm", rank=4, progress=False)
    with open(os.path.join(pack, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 4 and cfg["lora_bias"] is True
    assert "model.norm" in cfg["modules_to_save"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), pack)
    with torch.no_grad():
        got = model(IDS).logits
    b, t = tensors(base), tensors(tuned)
    want = {}
    for name in b:
        if ".o_proj.weight" in name or ".q_proj.weight" in name:
            want[name] = truncated(b[name], t[name], 4)
        elif name.endswith("norm.weight") or ".q_proj.bias" in name:
            want[name] = t[name]  # norms whole; a projection bias delta is exact (lora_B.bias)
    expected = logits_with(base, want)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(got, logits_with(base, {}), atol=1e-3)  # the adapter does something
    rows = {r.module: r for r in reports}
    o = rows["model.layers.0.self_attn.o_proj"]
    S = torch.linalg.svd(t["model.layers.0.self_attn.o_proj.weight"] - b["model.layers.0.self_attn.o_proj.weight"]).S
    assert o.rank == 4 and abs(o.kept_energy - float((S[:4] ** 2).sum() / (S ** 2).sum())) < 1e-6
    assert o.bytes == (4 * 32 + 32 * 4) * 4


def test_energy_picks_the_smallest_rank_per_module(tiny_pair, tmp_path):
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert choose_rank(s, None, 0.9) == 2 and choose_rank(s, None, 9 / 14) == 1 and choose_rank(s, None, 1.0) == 3
    base, tuned = tiny_pair("qwen2", **TINY)
    reports = extract_lora(base, tuned, str(tmp_path / "e"), "o_proj,down_proj", energy=0.9, progress=False)
    for r in reports:
        assert r.kept_energy >= 0.9
        # one rank less would keep less than 0.9
        b, t = tensors(base)[r.module + ".weight"], tensors(tuned)[r.module + ".weight"]
        S = torch.linalg.svd(t.float() - b.float()).S
        assert float((S[: r.rank - 1] ** 2).sum() / (S ** 2).sum()) < 0.9
    cfg = json.loads((tmp_path / "e" / "adapter_config.json").read_text())
    assert cfg["r"] == max(r.rank for r in reports)
    A, B, share = low_rank(torch.eye(5) * torch.arange(5.0), energy=1.0)
    assert A.shape == (4, 5) and share == 1.0


def test_apply_merges_a_lora_pack_as_peft_does(tiny_pair, tmp_path, capsys, one_torch_thread):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, tuned = tiny_pair("qwen2", **TINY)
    pack, out = str(tmp_path / "lora"), str(tmp_path / "merged")
    assert sfn(["pack", "extract", base, tuned, "--modules", "o_proj", "--rank", "8", "-o", pack, "--no-progress"]) == 0
    assert "kept energy" in capsys.readouterr().out
    assert sfn(["pack", "apply", base, pack, "-o", out, "--no-progress"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(out)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), pack).merge_and_unload()
    with torch.no_grad():
        assert torch.allclose(merged(IDS).logits, peft(IDS).logits, atol=1e-5)
    b, m = tensors(base), tensors(out)
    assert all(torch.equal(b[n], m[n]) for n in b if "o_proj" not in n)
    assert all(not torch.equal(b[n], m[n]) for n in b if "o_proj" in n)


def test_lora_bad_input(tiny_pair, tiny_model, tmp_path, capsys):
    base, tuned = tiny_pair("qwen2", **TINY)
    tied_base, tied_tuned = tiny_pair("qwen2", tied=True, **TINY)

    def fails(argv, *words):
        assert sfn(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("sfn pack: error:") and all(w in err for w in words), err

    out = str(tmp_path / "x")
    fails(["pack", "extract", base, tuned, "--modules", "o_proj", "--rank", "33", "-o", out],
          "--rank 33 is larger than model.layers.0.self_attn.o_proj.weight (32 x 32)", "largest rank is 32")
    fails(["pack", "extract", base, tuned, "--modules", "o_proj", "--energy", "1.5", "-o", out], "--energy")
    fails(["pack", "extract", tied_base, tied_tuned, "--modules", "o_proj,lm_head", "--rank", "2", "-o", out], "ties lm_head")
    p3, p3t = tiny_pair("phi3", **TINY)
    fails(["pack", "extract", p3, p3t, "--modules", "q_proj", "--rank", "2", "-o", out], "fused")
    assert not os.path.exists(out)
    pack = str(tmp_path / "ok")
    extract_lora(base, tuned, pack, "o_proj", rank=2, progress=False)
    fails(["pack", "apply", tiny_model("qwen2", seed=5, **TINY), pack, "-o", out], "SHA-256")
    wide = tiny_model("qwen2", layers=2, hidden=64, heads=2, kv_heads=1, intermediate=64)
    os.remove(os.path.join(pack, "manifest.json"))  # a plain PEFT adapter: shapes are still checked
    fails(["pack", "apply", wide, pack, "-o", out], "lora_A [2, 32]", "another model shape")
    assert not os.path.exists(out)
