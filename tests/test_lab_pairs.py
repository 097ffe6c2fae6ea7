"""Training the lab's pairs: determinism, the cache, loss checks, data masking, atomic writes."""

import copy
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from sfn_merge_plugin.lab import pairs, tasks, training

MICRO = {
    "model": dict(layers=1, hidden=16, heads=2, kv_heads=1, intermediate=32, vocab=384),
    "pretrain": dict(parent=None, steps=3, batch=4, lr=3e-3, warmup=1, mix={"chat": 0.5, "chat_direct": 0.5},
                     check={"chat": 0.05}),
    "circuit_sft": dict(parent="pretrain", steps=2, batch=4, lr=3e-3, warmup=1, mix={"chat_think": 1.0},
                        check={"chat_think": 1e-3}),
    "skill_pretrain": dict(parent="pretrain", steps=2, batch=4, lr=3e-3, warmup=1,
                           mix={"plain_think": 0.5, "chat_direct": 0.5}, check={"plain_think": 1e-3}),
    "skill_sft": dict(parent="skill_pretrain", steps=2, batch=4, lr=3e-4, warmup=1, mix={"chat_think": 1.0},
                      check={"chat_think": 1e-3}),
}


def test_stage_key_follows_recipe_ancestry_and_seed():
    key = pairs.stage_key(MICRO, "skill_sft", 0)
    assert key == pairs.stage_key(copy.deepcopy(MICRO), "skill_sft", 0)
    assert key != pairs.stage_key(MICRO, "skill_sft", 1)
    changed_parent = copy.deepcopy(MICRO)
    changed_parent["pretrain"]["steps"] = 4  # an ancestor's recipe changes every descendant's key
    assert key != pairs.stage_key(changed_parent, "skill_sft", 0)
    sibling = copy.deepcopy(MICRO)
    sibling["skill_sft"]["steps"] = 5  # another branch of the tree does not touch this stage
    assert pairs.stage_key(MICRO, "circuit_sft", 0) == pairs.stage_key(sibling, "circuit_sft", 0)


def test_schedules():
    cos = training.lr_schedule(dict(steps=100, warmup=10))
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(55) == pytest.approx(0.5, abs=0.01) and cos(99) < 0.01
    wsd = training.lr_schedule(dict(steps=100, warmup=10, schedule="wsd", decay=0.2))
    assert wsd(50) == 1.0 and wsd(79) == 1.0 and wsd(90) == pytest.approx(0.5) and wsd(100) == 0.0


def test_batches_train_on_completions_only_and_skip_held_out(tiny_tokenizer):
    held = tasks.heldout_problems(50)
    recipe = dict(MICRO["skill_pretrain"], steps=20, batch=16)
    kinds, batches = pairs.training_batches(tiny_tokenizer, recipe, 0, {p.question for p in held})
    assert kinds == ["plain_think", "chat_direct"]
    seen = []
    for ids, labels, row_kinds in batches:
        for row, lab, k in zip(ids.tolist(), labels.tolist(), row_kinds.tolist()):
            first = next(i for i, x in enumerate(lab) if x != -100)
            prompt, completion = tiny_tokenizer.decode(row[:first]), tiny_tokenizer.decode([x for x in lab if x != -100])
            assert "compute" in prompt and "compute" not in completion
            if kinds[k] == "plain_think":
                assert completion.startswith("<think>\n") and completion.endswith("<|endoftext|>")
                assert "<|im_start|>" not in prompt
            else:
                assert completion.startswith("\\boxed{") and completion.endswith("<|im_end|>")
            seen.append(prompt)
    assert {kinds[k] for _, _, rk in batches for k in rk.tolist()} == set(kinds)
    assert not any(p.question in text for p in held for text in seen)


def test_stages_are_deterministic_and_cached(tmp_path, tiny_tokenizer, monkeypatch):
    first = pairs.run_stage("pretrain", MICRO, 3, tmp_path / "a", tiny_tokenizer, set(), {}, progress=False)
    second = pairs.run_stage("pretrain", MICRO, 3, tmp_path / "b", tiny_tokenizer, set(), {}, progress=False)
    a = load_file(os.path.join(first.path, "model.safetensors"))
    b = load_file(os.path.join(second.path, "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not first.cached and first.losses == second.losses
    other = pairs.run_stage("pretrain", MICRO, 4, tmp_path / "b", tiny_tokenizer, set(), {}, progress=False)
    c = load_file(os.path.join(other.path, "model.safetensors"))
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])

    def no_training(*args, **kwargs):
        raise AssertionError("a cached stage was trained again")

    monkeypatch.setattr(pairs, "train", no_training)
    again = pairs.run_stage("pretrain", MICRO, 3, tmp_path / "a", tiny_tokenizer, set(), {}, progress=False)
    assert again.cached and again.path == first.path and again.losses == first.losses


def test_build_pairs_shares_pretraining_and_flags_failed_loss_checks(tmp_path, tiny_tokenizer):
    from sfn_merge_plugin.lab import branches

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two branches: each trains in its own process on one thread
    try:
        built = pairs.build_pairs(tmp_path, seed=0, recipes=MICRO, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert sorted(branches.branches(MICRO, "pretrain")) == [["circuit_sft"], ["skill_pretrain", "skill_sft"]]
    # the same chains trained one after the other in this process give the same bits
    for chain in branches.branches(MICRO, "pretrain"):
        alone = branches._train_chain(chain, MICRO, 0, str(tmp_path / "alone"), set(), built["new_circuit"].base.path,
                                      False, None, 1)
        for stage in chain:
            trained = next(p for pair in built.values() for p in (pair.base, pair.reasoning) if p.name == stage)
            a = load_file(os.path.join(alone[stage].path, "model.safetensors"))
            b = load_file(os.path.join(trained.path, "model.safetensors"))
            assert not trained.cached and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            assert alone[stage].losses == trained.losses
    circuit, skill = built["new_circuit"], built["skill"]
    assert circuit.base.name == "pretrain" and circuit.reasoning.name == "circuit_sft"
    assert skill.base_lineage == ["pretrain", "skill_pretrain"]
    for pair in built.values():  # each reasoning model starts from its own base
        meta = json.loads((tmp_path / os.path.basename(pair.reasoning.path) / "sfn_lab_stage.json").read_text())
        assert meta["parent"] == pair.base.path
    # 2-3 steps cannot reach the thresholds: the pairs must say they are not to be trusted
    assert not circuit.trusted and not skill.trusted
    loss, threshold, ok = skill.reasoning.check["chat_think"]
    assert loss > threshold and ok is False
    record = pairs.training_record(skill)
    assert record["trusted"] is False and record["reasoning"]["check"]["chat_think"]["ok"] is False
    assert set(record["reasoning"]["curves"]) == {"chat_think"}


def test_a_passing_check(tmp_path):
    meta = {"curves": {"chat_think": [1.0] * 30 + [1e-4] * 20}, "seconds": 1.0}
    r = pairs._result("skill_sft", tmp_path, "k", dict(MICRO["skill_sft"]), meta, cached=True)
    assert r.ok and r.final_loss["chat_think"] == pytest.approx(1e-4)


def test_failed_save_leaves_nothing(tmp_path, tiny_tokenizer):
    model = training.fresh_model(MICRO["model"], 0)

    class Broken:
        def save_pretrained(self, path):
            raise OSError("disk full")

    target = tmp_path / "stage-x"
    with pytest.raises(OSError, match="disk full"):
        pairs._save(model, Broken(), target, {})
    assert list(tmp_path.iterdir()) == []


def test_early_stop_and_extensions(tmp_path, tiny_tokenizer):
    recipes = copy.deepcopy(MICRO)
    # a check every loss passes: training stops once 30% of the steps are done
    recipes["pretrain"].update(steps=10, check={"chat": 100.0}, early_stop=True)
    easy = pairs.run_stage("pretrain", recipes, 0, tmp_path, tiny_tokenizer, set(), {}, progress=False)
    assert easy.rounds == [4] and len(easy.losses["chat"]) == 4 and easy.ok
    # a check nothing passes: the main run, then each extension (new data, lower rate), then it gives up
    recipes["pretrain"].update(steps=3, check={"chat": 1e-9}, early_stop=False,
                               extend=dict(steps=2, lr_scale=0.5, max=2))
    hard = pairs.run_stage("pretrain", recipes, 0, tmp_path, tiny_tokenizer, set(), {}, progress=False)
    assert hard.rounds == [3, 2, 2] and len(hard.losses["chat"]) == 7 and not hard.ok
    assert hard.steps_per_s > 0 and hard.key != easy.key


def test_a_pairs_task_reaches_its_training_data_and_every_stage(tmp_path, tiny_tokenizer):
    """The SmolLM2 pair names its task (addition) in its SFT recipe (so in its cache key); the stages grade,
    sweep and Freeze-train it on that task's problems, while the offline pairs keep the chain."""
    from sfn_merge_plugin.lab import freeze_run, real_pair
    from sfn_merge_plugin.lab.config import SIZES
    from sfn_merge_plugin.lab.stages import Context, PairRef, destruction_prompts

    sft = real_pair.RECIPES[real_pair.SFT_STAGE]
    assert sft["task"] == "addition"
    assert pairs.stage_key(real_pair.RECIPES, real_pair.SFT_STAGE, 0) != pairs.stage_key(
        dict(real_pair.RECIPES, **{real_pair.SFT_STAGE: dict(sft, task="chain")}), real_pair.SFT_STAGE, 0)
    held = real_pair.task_of().heldout(30)
    kinds, batches = pairs.training_batches(tiny_tokenizer, dict(sft, steps=4, batch=8), 0, {p.question for p in held})
    texts = [tiny_tokenizer.decode(ids[labels != -100]) for b in batches for ids, labels in zip(b[0], b[1])]
    worked = [t for t in texts if t.startswith("<think>\n")]
    assert worked and all(" -> " in t and t.endswith("<|im_end|>") for t in worked)
    size = real_pair.size_for(SIZES["full"])
    ctx = Context(tmp_path, tmp_path, size, tasks.heldout_problems(size.heldout), [], "cpu", False, False, 1, None)
    chain = PairRef("skill", 0, "b", "r", "", built=True)
    smol = PairRef(real_pair.NAME, 0, "b", "r", "", built=False, probes=False, task=real_pair.TASK)
    assert ctx.problems_for(chain) == ctx.problems  # the offline pairs: the very same list as before
    assert ctx.problems_for(smol) == real_pair.task_of().heldout(size.heldout)
    prompts = destruction_prompts(ctx, smol)[-size.sweep_problems:]  # after the sweep's built-in prompts
    assert [(p.id, p.text) for p in prompts] == [(f"addition{i}", q.question)
                                                 for i, q in enumerate(ctx.problems_for(smol)[: size.sweep_problems])]
    data = freeze_run.write_sft_data(tiny_tokenizer, tmp_path / "d.jsonl", {"chat_think": 1.0}, 6, 0,
                                     {p.question for p in ctx.problems_for(smol)}, task=smol.task)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 6 and all("+" in r["prompt"] and " -> " in r["completion"] for r in rows)
