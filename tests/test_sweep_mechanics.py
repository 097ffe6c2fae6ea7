"""Destruction sweep mechanics on tiny random models: cells equal mergekit's sfn_destroy / remove outputs bit
for bit, restoration is exact, equivalence classes, selector errors before any loading, the outputs."""

import csv
import json
import os

import pytest
import torch

from merge_checks import tensors
from sfn_merge_plugin.remove_layers import remove_recipe
from sfn_merge_plugin.selectors import SelectorError
from sfn_merge_plugin.sweep import runner
from sfn_merge_plugin.sweep.apply import Destruction, destroyed_model, layer_list
from sfn_merge_plugin.sweep.generate import Decoding
from sfn_merge_plugin.sweep.prompts import BUILTIN, Prompt

FAST = Decoding(max_new_tokens=4, batch_size=4)
TWO_PROMPTS = [BUILTIN[0], BUILTIN[6]]  # the paper's "books" conversation and one reasoning prompt


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_torch_thread):
    """Tiny models run ~100x faster on one thread than on two contended cores."""


def load(path):
    return runner.load(path, device="cpu")[0]


def snapshot(model):
    return {n: (p.detach().clone(), p.data_ptr()) for n, p in model.named_parameters()}


def logits(model, ids=(3, 40, 41, 42, 17, 99, 5, 200, 1, 7)):
    with torch.no_grad():
        return model(input_ids=torch.tensor([list(ids)])).logits


@pytest.mark.parametrize("arch,modules,mode,layers", [
    ("qwen2", "o_proj", "reinit", "1-2"),
    ("llama", "mlp", "zero", "all"),
    ("phi3", "q_proj", "reinit", "0,3"),  # one block of the fused qkv_proj
    ("phi3", "up_proj", "zero", "2"),  # one block of the fused gate_up_proj
    ("gpt2", "k_proj,o_proj", "reinit", "1"),  # Conv1D block + a tensor with bias
])
def test_cell_equals_sfn_destroy_output_bit_for_bit(tiny_model, run_recipe, arch, modules, mode, layers):
    path = tiny_model(arch)
    recipe = {"merge_method": "sfn_destroy", "base_model": path, "models": [{"model": path}],
              "parameters": {"modules": modules, "layers": layers, "mode": mode, "seed": 11}}
    written = tensors(run_recipe(recipe))
    model = load(path)
    base = snapshot(model)
    with destroyed_model(model, Destruction(modules, mode, layers, seed=11)):
        live = dict(model.named_parameters())
        changed = 0
        for name, t in written.items():
            assert live[name].dtype == t.dtype and torch.equal(live[name].detach(), t), name
            changed += not torch.equal(t, base[name][0])
        assert set(written) == set(live)
    assert changed >= 1


@pytest.mark.parametrize("method,modules", [("zero", "attn,mlp"), ("reinit", "qkv,norm"), ("remove", "-")])
def test_restoration_is_exact_even_after_an_error(tiny_model, method, modules):
    model = load(tiny_model("qwen2"))
    before, ref = snapshot(model), logits(model)
    owner, attr, layers = layer_list(model)
    n, types = model.config.num_hidden_layers, list(model.config.layer_types)
    idx = [layer.self_attn.layer_idx for layer in layers]
    with pytest.raises(RuntimeError, match="boom"):
        with destroyed_model(model, Destruction(modules, method, "1-2")):
            assert not torch.equal(logits(model), ref)
            raise RuntimeError("boom")
    after = snapshot(model)
    for name, (t, ptr) in before.items():
        assert torch.equal(after[name][0], t) and after[name][1] == ptr, name  # the very same storage
    assert getattr(owner, attr) is layers and model.config.num_hidden_layers == n
    assert list(model.config.layer_types) == types and [layer.self_attn.layer_idx for layer in layers] == idx
    assert torch.equal(logits(model), ref)


@pytest.mark.parametrize("arch", ["qwen2", "gemma2", "gpt2"])  # gemma2: per-layer layer_types; gpt2: transformer.h
def test_remove_cell_equals_the_remove_recipe_model(tiny_model, run_recipe, arch):
    path = tiny_model(arch, layers=5)
    removed = load(run_recipe(remove_recipe(path, "1-2")))
    model = load(path)
    assert removed.config.num_hidden_layers == 3
    prompt = torch.tensor([[3, 40, 41, 42, 17, 99]])
    greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=2)
    with destroyed_model(model, Destruction("-", "remove", "1-2")):
        assert torch.equal(logits(model), logits(removed))
        assert torch.equal(model.generate(prompt, **greedy), removed.generate(prompt, **greedy))  # KV cache too
    assert not torch.equal(logits(model), logits(removed))


def test_tied_lm_head_is_untied_for_the_cell_and_retied(tiny_model, run_recipe):
    path = tiny_model("qwen2", tied=True)
    written = tensors(run_recipe({"merge_method": "sfn_destroy", "base_model": path, "models": [{"model": path}],
                                  "parameters": {"modules": "lm_head", "mode": "reinit", "seed": 3}}))
    model = load(path)
    embed = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is embed
    with destroyed_model(model, Destruction("lm_head", "reinit", "all", seed=3)):
        assert torch.equal(model.get_output_embeddings().weight, written["lm_head.weight"])
        assert torch.equal(embed, written["model.embed_tokens.weight"])
    assert model.get_output_embeddings().weight is embed


@pytest.mark.parametrize("modules,mode", [("embed", "zero"), ("embed", "reinit"), ("embed,lm_head", "reinit")])
def test_tied_embed_cell_equals_the_untied_sfn_destroy_output(tiny_model, run_recipe, modules, mode):
    """Destroying embed on a tied model must not destroy the head through the shared Parameter: the cell is
    the untied model sfn_destroy writes (embed alone: the head keeps the original values)."""
    path = tiny_model("qwen2", tied=True)
    written = tensors(run_recipe({"merge_method": "sfn_destroy", "base_model": path, "models": [{"model": path}],
                                  "parameters": {"modules": modules, "mode": mode, "seed": 5}}))
    model = load(path)
    embed = model.get_input_embeddings().weight
    original = embed.detach().clone()
    before = logits(model)
    with destroyed_model(model, Destruction(modules, mode, "all", seed=5)):
        head = model.get_output_embeddings().weight
        assert head is not model.get_input_embeddings().weight
        assert torch.equal(model.get_input_embeddings().weight, written["model.embed_tokens.weight"])
        assert torch.equal(head, written["lm_head.weight"])
        if modules == "embed":
            assert torch.equal(head, original)  # the head keeps its values
    assert model.get_output_embeddings().weight is embed and model.get_input_embeddings().weight is embed
    assert torch.equal(embed, original) and torch.equal(logits(model), before)


def test_tied_cells_say_so_in_the_report(tiny_model):
    res = runner.run_sweep(tiny_model("qwen2", tied=True), "embed", "zero", "all", prompts=TWO_PROMPTS[:1],
                           decoding=FAST, progress=False, device="cpu")
    assert any(n.startswith("tied lm_head: a cell that destroys embed but not lm_head unties") for n in res.notes)
    untied = runner.run_sweep(tiny_model("qwen2"), "embed", "zero", "all", prompts=TWO_PROMPTS[:1],
                              decoding=FAST, progress=False, device="cpu")
    assert not any("tied lm_head" in n for n in untied.notes)


def test_per_layer_norm_cells_leave_the_final_norm(tiny_model):
    """``norm`` in a one-layer cell means that layer's norms: model.norm must not be zeroed in every cell."""
    from sfn_merge_plugin.sweep.apply import model_layout, resolve

    model = load(tiny_model("qwen2"))
    layout = model_layout(model)
    cells = runner.plan_cells(layout, ["norm"], ["zero"], "1-2", per_layer=True)
    assert [d.layers for d in cells] == ["1", "2"]
    for d in cells:
        assert sorted(s.name for s in resolve(layout, d)) == [
            f"model.layers.{d.layers}.input_layernorm.weight", f"model.layers.{d.layers}.post_attention_layernorm.weight"]
    final = model.model.norm.weight.detach().clone()
    with destroyed_model(model, cells[0]):
        assert torch.equal(model.model.norm.weight, final)
        assert not model.model.layers[1].input_layernorm.weight.any()
    # a model-level tensor would be destroyed in every per-layer cell: refused, with what to do instead
    for row in ("embed", "final_norm", "re:^model\\.norm"):
        with pytest.raises(SelectorError, match="--per-layer: row .* selects model-level tensors .* without --per-layer"):
            runner.plan_cells(layout, [row], ["zero"], "1-2", per_layer=True)
    assert len(runner.plan_cells(layout, ["final_norm"], ["zero"], "1-2", per_layer=False)) == 1


def test_equivalence_classes_on_bias_free_llama(tiny_model):
    path = tiny_model("llama")  # no biases
    res = runner.run_sweep(path, "q_proj,k_proj,v_proj,o_proj", "zero,reinit", "1-2", prompts=TWO_PROMPTS,
                           decoding=FAST, progress=False, device="cpu")
    classes = {tuple(labels): why for labels, why in res.classes}
    assert set(classes) == {("zero(q_proj)@1-2", "zero(k_proj)@1-2"), ("zero(v_proj)@1-2", "zero(o_proj)@1-2")}
    assert classes[("zero(q_proj)@1-2", "zero(k_proj)@1-2")].startswith("uniform attention")
    assert classes[("zero(v_proj)@1-2", "zero(o_proj)@1-2")].startswith("the attention branch outputs zero")
    assert any("cannot be separated from the whole attention branch" in c for c in res.caveats)
    assert res.cell("zero(o_proj)@1-2").equivalent_to == ["zero(v_proj)@1-2"]
    # identical responses follow from identical logits; ReInit cells all differ
    q, k = res.cell("zero(q_proj)@1-2"), res.cell("zero(k_proj)@1-2")
    assert [r.token_ids for r in q.responses] == [r.token_ids for r in k.responses]
    assert len({c.fingerprint for c in res.cells if c.method == "reinit"}) == 4
    # and the logits themselves, outside the sweep
    model = load(path)
    with destroyed_model(model, Destruction("v_proj", "zero", "1-2")):
        v = logits(model)
    with destroyed_model(model, Destruction("o_proj", "zero", "1-2")):
        assert torch.equal(logits(model), v)


def test_an_o_proj_bias_breaks_the_v_o_pairing(tiny_model):
    path = tiny_model("llama", bias=True)  # q/k/v/o and MLP biases
    res = runner.run_sweep(path, "q_proj,k_proj,v_proj,o_proj", "zero", "1-2", prompts=TWO_PROMPTS[:1],
                           decoding=FAST, progress=False, device="cpu")
    assert [labels for labels, _ in res.classes] == [["zero(q_proj)@1-2", "zero(k_proj)@1-2"]]  # zeroed with their biases
    assert len(res.caveats) == 1 and "uniform attention" in res.caveats[0]


def test_selector_problems_fail_before_the_model_loads(tiny_model, monkeypatch, tmp_path):
    path = tiny_model("llama")

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the selectors were checked")

    monkeypatch.setattr(runner, "load", no_load)
    cases = [
        (dict(modules="o_proj", methods="zero", layers="5-30"), "layer 30 is out of range, the model has 4 layers"),
        (dict(modules="o_proj", methods="remove", layers="all"), "keep at least one"),
        (dict(modules="q_norm", methods="zero", layers="all"), "'q_norm' matches no tensor"),
        (dict(modules="o_proj,attention", methods="zero", layers="all"), "unknown module kind 'attention'"),
        (dict(modules="o_proj", methods="zero,delete", layers="all"), "'delete'; choose from zero, reinit, remove"),
        (dict(modules="o_proj", methods="zero", layers="3-1"), "runs backwards"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SelectorError, match=message):
            runner.run_sweep(path, out_dir=str(tmp_path / "out"), progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_writes_table3_responses_and_heatmap(tiny_model, tmp_path, capsys):
    from sfn_merge_plugin.cli import main

    path = tiny_model("llama")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "hi", "prompt": "hello, how are you today?"}\n'
                       '{"id": "sum", "prompt": "What is 2 + 3?", "answer": "5"}\n')
    out = tmp_path / "sweep"
    rc = main(["destroy-sweep", path, "--modules", "o_proj,q_proj+k_proj", "--methods", "zero,remove", "--layers", "1-2",
               "--per-layer", "--prompts", str(prompts), "--max-new-tokens", "3", "--no-progress", "--device", "cpu",
               "-o", str(out)])
    assert rc == 0
    assert sorted(os.listdir(out)) == [".sfn-output", "levels_heatmap.png", "responses.jsonl", "sweep.json", "table3.csv", "table3.md"]
    rows = list(csv.DictReader(open(out / "table3.csv")))
    assert [(r["method"], r["module"], r["layers"]) for r in rows] == [
        ("-", "intact", "-"),
        ("zero", "o_proj", "1"), ("zero", "q_proj+k_proj", "1"), ("remove", "-", "1"),
        ("zero", "o_proj", "2"), ("zero", "q_proj+k_proj", "2"), ("remove", "-", "2"),
    ]
    for r in rows:
        assert sum(int(r[lv]) for lv in ("I", "II", "III", "IV")) == 2 and r["modal_level"] in ("I", "II", "III", "IV")
        assert r["reasoning_graded"] == "1"
    lines = [json.loads(x) for x in open(out / "responses.jsonl")]
    assert len(lines) == 7 * 2
    assert {"nll", "order_gain", "relevance", "repetition", "nonword_rate", "correct"} <= set(lines[0]["evidence"])
    assert all(x["level"] and x["reasons"] for x in lines)
    for x in lines:  # a response the text rules decide (non-words, a loop...) is not scored by the model, and says so
        assert (x["evidence"]["nll"] is None) == (x["evidence"]["tokens"] == 0 or runner.TEXT_DECIDED in x["reasons"])
    assert open(out / "levels_heatmap.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    md = open(out / "table3.md").read()
    assert "| module | 1 | 2 |" in md and "## Level thresholds" in md
    assert "calibration is not reliable" in md  # a random model cannot tell text from shuffled tokens
    summary = json.load(open(out / "sweep.json"))
    assert summary["settings"]["prompts"] == ["hi", "sum"] and "max_nll" in summary["calibration"]
    assert "restoration checked" in capsys.readouterr().out
    # a later non-per-layer run into the same folder drops the stale heatmap
    rc = main(["destroy-sweep", path, "--modules", "o_proj", "--methods", "zero", "--layers", "1", "--prompts",
               str(prompts), "--max-new-tokens", "2", "--no-progress", "--device", "cpu", "-o", str(out)])
    assert rc == 0 and not (out / "levels_heatmap.png").exists()
    assert "| Zero | o_proj |" in open(out / "table3.md").read()


def test_cli_reports_bad_input_in_one_line(tiny_model, tmp_path, capsys):
    from sfn_merge_plugin.cli import main

    path = tiny_model("llama")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "no"}\n')
    aime = tmp_path / "aime.jsonl"
    aime.write_text('{"id": "x", "prompt": "Find n.", "answer": "1/2", "grader": "aime"}\n')
    for argv, message in [
        (["--layers", "9"], "layer 9 is out of range"),
        (["--prompts", str(bad)], "line 2: unknown key(s) question"),
        (["--prompts", str(bad), "--add-prompts", str(bad)], "either --prompts"),
        (["--chat-template", "on", "--prompts", str(tmp_path / "missing.jsonl")], "cannot read it"),
        (["--prompts", str(aime)], "prompt 'x': AIME gold must be an integer"),
    ]:
        argv = argv if "--layers" in argv else argv + ["--layers", "1"]
        rc = main(["destroy-sweep", path, "--modules", "o_proj", "-o", str(tmp_path / "o"), "--no-progress"] + argv)
        err = capsys.readouterr().err
        assert rc == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_sampling_is_seeded_and_chat_template_can_be_switched_off(tiny_model):
    from sfn_merge_plugin.sweep.generate import generate, render

    model = load(tiny_model("llama"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model("llama"))
    ids = [render(tok, "hello", chat=True), render(tok, "write a short paragraph", chat=False)]
    assert tok.decode(ids[0]).startswith("<|im_start|>user\nhello") and tok.decode(ids[1]) == "write a short paragraph"
    run = lambda seed: [t for t, _ in generate(model, tok, ids, Decoding(max_new_tokens=12, sample=True, temperature=1.5, seed=seed))]
    assert run(1) == run(1) and run(1) != run(2)
    greedy = [t for t, _ in generate(model, tok, ids, Decoding(max_new_tokens=12))]
    one_by_one = [generate(model, tok, [p], Decoding(max_new_tokens=12))[0][0] for p in ids]
    assert greedy == one_by_one  # left padding does not change what a prompt gets


def test_prompt_files_replace_or_extend(tmp_path):
    from sfn_merge_plugin.sweep.prompts import PromptError, load_jsonl, prompt_set

    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "Say hi."}\n\n{"id": "q", "prompt": "What is 6*7?", "answer": 42, "grader": "math"}\n')
    mine = load_jsonl(str(f))
    assert mine == [Prompt("line1", "Say hi."), Prompt("q", "What is 6*7?", "42", "math")]
    assert mine[0].kind == "conversation" and mine[1].kind == "reasoning"
    assert prompt_set(str(f)) == mine and prompt_set(str(f), extend=True) == list(BUILTIN) + mine
    assert any("importance of reading books" in p.text for p in BUILTIN)
    for text, message in [
        ('{"prompt": ""}', "line 1: \"prompt\" must be a non-empty string"),
        ("not json", "line 1: not valid JSON"),
        ('{"prompt": "a", "grader": "exact"}', "grader 'exact' is not one of math, aime, gpqa"),
        ('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}', "prompt id 'x' is used twice"),
        ("", "holds no prompt"),
    ]:
        f.write_text(text)
        with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
            prompt_set(str(f))


def test_sweep_generation_is_evaluations_stack(tiny_model):
    """One generation stack: the sweep's responses are hf_backend.generate_ids', cut at evaluation's stop tokens."""
    from transformers import AutoTokenizer

    from sfn_merge_plugin.evaluation.hf_backend import eos_ids_of, generate_ids
    from sfn_merge_plugin.sweep.generate import generate, render, stop_ids

    path = tiny_model("qwen2")
    model, tok = load(path), AutoTokenizer.from_pretrained(path)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.eos_token_id = None  # a checkpoint that names no EOS still stops at <|im_end|>
    assert im_end in stop_ids(model, tok) and stop_ids(model, tok) == list(eos_ids_of(model, tok))
    ids = [render(tok, p.text, True) for p in BUILTIN[:5]]
    ours = generate(model, tok, ids, Decoding(max_new_tokens=10, batch_size=2))
    theirs = generate_ids(model, tok, ids, 10, batch_size=2)
    assert [t for t, _ in ours] == [o.token_ids for o in theirs]
    assert not any(t in stop_ids(model, tok) for tokens, _ in ours for t in tokens)
