"""The lab's accuracy-vs-rank rows, and pack sizes computed from config numbers (checked against real packs)."""

import os

import torch

from sfn_merge_plugin.packs.extract import extract_exact
from sfn_merge_plugin.packs.lora import extract_lora
from sfn_merge_plugin.packs.measure import rank_curve
from sfn_merge_plugin.packs.sizes import REAL_CONFIGS, module_shapes, pack_size, table

TINY = dict(layers=2, hidden=32, heads=2, kv_heads=1, intermediate=64)
IDS = torch.tensor([[3, 10, 20, 30, 1]])


def test_rank_curve_rows(tiny_pair, tmp_path, one_torch_thread):
    from transformers import AutoModelForCausalLM

    base, tuned = tiny_pair("qwen2", **TINY)
    with torch.no_grad():
        target = AutoModelForCausalLM.from_pretrained(tuned)(IDS).logits

    def closeness(model):  # a stand-in "accuracy": how close the logits are to the fine-tune's
        with torch.no_grad():
            return -float((model(IDS).logits - target).pow(2).mean())

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = rank_curve(base, tuned, closeness, ranks=[1, 32], model=model, workdir=str(tmp_path))
    assert [(r["pack"], r["rank"]) for r in rows] == [("base", None), ("exact", None), ("lora", 1), ("lora", 32)]
    base_row, exact, r1, full = rows
    assert base_row["accuracy"] == closeness(model)  # the model is the base again
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert 0 < r1["kept_energy"] < 1 and abs(full["kept_energy"] - 1.0) < 1e-6
    assert abs(full["accuracy"] - exact["accuracy"]) < 1e-6  # full rank = the exact o_proj swap
    assert r1["size_bytes"] < full["size_bytes"] and exact["size_bytes"] > 0


def test_sizes_from_config_match_real_packs(tiny_pair, tmp_path):
    base, tuned = tiny_pair("qwen2", **TINY)
    cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
               vocab_size=384, tie_word_embeddings=False, qkv_bias=True)
    extract_exact(base, tuned, str(tmp_path / "e"), "o_proj,norm,q_proj", progress=False)
    from sfn_merge_plugin.packs.manifest import header_of

    header, _, _ = header_of(str(tmp_path / "e" / "model.safetensors"))
    stored = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in header.values())
    assert stored == pack_size(cfg, ("o_proj", "norm", "q_proj"), dtype_bytes=4)
    reports = extract_lora(base, tuned, str(tmp_path / "l"), "o_proj,norm", rank=3, progress=False)
    assert sum(r.bytes for r in reports) == pack_size(cfg, ("o_proj", "norm"), rank=3, dtype_bytes=4)
    q = REAL_CONFIGS["Qwen2.5-32B(-Instruct)"]
    assert module_shapes(q)["o_proj"]["matrix"] == (5120, 5120)
    assert pack_size(q, ("o_proj",)) == 64 * 5120 * 5120 * 2
    assert pack_size(q, ("o_proj",), rank=64) == 64 * 64 * (5120 + 5120) * 2
    assert "| Qwen2.5-32B(-Instruct) | o_proj | 3,200.0 |" in table()
    assert os.path.isfile(tmp_path / "l" / "adapter_model.safetensors")


def test_docs_size_table_is_the_generated_one():
    from pathlib import Path

    from sfn_merge_plugin.packs.sizes import BEGIN, END

    doc = (Path(__file__).resolve().parent.parent / "docs" / "packs.md").read_text()
    assert doc.split(BEGIN, 1)[1].split(END, 1)[0].strip() == table().strip()
