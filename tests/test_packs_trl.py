"""The fifth Table 2 row: `trl sft --config trl_configs/freeze_lora_oproj.yaml` (scaled down) trains a PEFT LoRA
on o_proj (+ embeddings, head, norms whole), and `sfn pack apply` merges the adapter it saves."""

import os

import pytest
import torch

from freeze_checks import RUN, bin_of, load_tensors, made_up_s1k, run_all
from sfn_merge_plugin.cli import main as sfn
from sfn_merge_plugin.freeze.configs import load_recipe, scaled_recipe, write_recipe

TINY = dict(layers=2, hidden=32, heads=2, kv_heads=1, intermediate=64)


def test_shipped_recipe_is_a_peft_lora_on_o_proj():
    r = load_recipe("lora_oproj")
    assert r["use_peft"] is True and r["lora_target_modules"] == [r".*\.o_proj"]
    assert "model_init_kwargs" not in r  # sfn_trainable and PEFT are refused together
    assert r["model_name_or_path"] == load_recipe("oproj")["model_name_or_path"]


@pytest.mark.slow  # ~50 s on 2 cores: mostly `trl sft` start-up (accelerate launches a second interpreter)
def test_trl_sft_lora_adapter_is_a_pack(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    raw = made_up_s1k(str(tmp_path / "raw.jsonl"))
    assert sfn(["data", "s1k", "-o", str(tmp_path / "data"), "--source", raw]) == 0
    base = tiny_model("qwen2", **TINY)
    out = str(tmp_path / "adapter")
    recipe = scaled_recipe("lora_oproj", model=base, data_file=str(tmp_path / "data" / "s1k.jsonl"), output_dir=out,
                           **dict(RUN, learning_rate=1e-2), lora_r=4, lora_alpha=8)
    run_all([[bin_of("trl"), "sft", "--config", write_recipe(recipe, str(tmp_path / "r.yaml"))]])
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
    merged = str(tmp_path / "merged")
    assert sfn(["pack", "apply", base, out, "-o", merged, "--no-progress"]) == 0
    before, after = load_tensors(base), load_tensors(merged)
    assert set(before) == set(after)
    for name, t in before.items():
        moved = not torch.equal(t, after[name])
        trained = "o_proj" in name or "norm" in name or "embed_tokens" in name or "lm_head" in name
        assert moved == trained, name  # LoRA moved o_proj; modules_to_save replaced embed, head, norms; rest bit-identical
    ids = torch.tensor([[3, 10, 20, 30, 1]])
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out).merge_and_unload()
    with torch.no_grad():
        assert torch.allclose(AutoModelForCausalLM.from_pretrained(merged)(ids).logits, peft(ids).logits, atol=1e-5)
