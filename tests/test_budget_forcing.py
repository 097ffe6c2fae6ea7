"""The budget-forcing loop against a scripted backend (exact token layout per preset, budgets, batching), and
the HF backend on a tiny random Qwen2 that closes its thinking early."""

import pytest

from sfn_merge_plugin.evaluation.budget_forcing import Completion, generate_with_budget
from sfn_merge_plugin.evaluation.presets import BudgetForcingError, budgets, resolve_config

SPECIALS = ["<|im_start|>", "<|im_end|>", "</think>", "<think>"]
EOS = 1001  # id of <|im_end|>


class CharTokenizer:
    """One token per character, the four special strings as single tokens: layouts can be read off text."""

    def encode(self, text):
        ids, i = [], 0
        while i < len(text):
            for k, special in enumerate(SPECIALS):
                if text.startswith(special, i):
                    ids.append(1000 + k)
                    i += len(special)
                    break
            else:
                ids.append(ord(text[i]) + 2000)
                i += 1
        return ids

    def decode(self, ids):
        return "".join(SPECIALS[t - 1000] if t < 2000 else chr(t - 2000) for t in ids)


class ScriptedBackend:
    """Plays, for each prompt (recognised by its start), a list of planned outputs, one per call; records calls."""

    def __init__(self, scripts):
        self.tok = CharTokenizer()
        self.eos_token_ids = (EOS,)
        self.scripts = {p: list(outs) for p, outs in scripts.items()}
        self.calls = []

    def encode(self, text):
        return self.tok.encode(text)

    def decode(self, ids):
        return self.tok.decode(ids)

    def generate(self, prompts, max_new_tokens, stop_token_ids, min_new_tokens=0, sampling=None):
        self.calls.append({"prompts": [self.decode(p) for p in prompts], "limits": list(max_new_tokens),
                           "stops": list(stop_token_ids), "min_new": min_new_tokens})
        outs = []
        for prompt, limit in zip(prompts, max_new_tokens):
            key = next(k for k in self.scripts if self.decode(prompt).startswith(k))
            planned = self.encode(self.scripts[key].pop(0))
            taken = []
            for token in planned:
                if token in stop_token_ids and len(taken) >= min_new_tokens:
                    outs.append(Completion(taken, stopped=True, stop_token_id=token))
                    break
                if len(taken) == limit:
                    outs.append(Completion(taken, stopped=False))
                    break
                taken.append(token)
            else:
                outs.append(Completion(taken, stopped=False))
        return outs


def run(scripts, preset, prompts=None, **overrides):
    backend = ScriptedBackend(scripts)
    max_gen_toks = overrides.pop("max_gen_toks", 200)
    config = resolve_config(preset, **overrides)
    prompts = prompts or list(scripts)
    outs = generate_with_budget(backend, [backend.encode(p) for p in prompts], config, max_gen_toks=max_gen_toks)
    return outs, backend


def test_r1_layout_wait_twice_then_answer():
    outs, backend = run({"Q:": ["ab</think>", "c</think>", "d</think>", r"\boxed{5}<|im_end|>"]}, "r1",
                        max_tokens_thinking=100, max_tokens_answer=20)
    out = outs[0]
    assert out.text == "<think>\nabWaitcWaitd\n</think>\n\n\\boxed{5}"
    assert out.thinking_text == "abWaitcWaitd" and out.answer_text == r"\boxed{5}"
    assert (out.forced_continuations, out.budget_exhausted, out.answer_truncated) == (2, False, False)
    assert out.thinking_tokens == len("abWaitcWaitd") and out.answer_tokens == len(r"\boxed{5}")
    assert out.generated_tokens == len(out.token_ids) == len(backend.encode(out.text))
    assert out.prompt_tokens == 2
    # each round sees prompt + thinking so far, gets the REMAINING budget, stops on </think> and EOS
    assert [c["prompts"][0] for c in backend.calls] == [
        "Q:<think>\n", "Q:<think>\nabWait", "Q:<think>\nabWaitcWait", "Q:<think>\nabWaitcWaitd\n</think>\n\n"]
    assert [c["limits"][0] for c in backend.calls] == [100, 100 - 6, 100 - 11, 20]
    assert [c["min_new"] for c in backend.calls] == [0, 1, 1, 0]
    assert backend.calls[0]["stops"] == [1002, EOS] and backend.calls[-1]["stops"] == [EOS]


def test_r1_chat_template_that_already_opened_the_thinking():
    outs, backend = run({"Q<think>\n": ["x</think>", "y<|im_end|>"]}, "r1", thinking_n_ignore=0,
                        max_tokens_thinking=50, max_tokens_answer=10)
    assert outs[0].text == "x\n</think>\n\ny"  # no second <think>
    assert backend.calls[0]["prompts"][0] == "Q<think>\n"


def test_qwen3_eos_inside_thinking_also_counts_as_an_early_stop():
    outs, _ = run({"Q": ["a<|im_end|>", "b</think>", "c<|im_end|>"]}, "qwen3", thinking_n_ignore=1,
                  max_tokens_thinking=50, max_tokens_answer=10)
    assert outs[0].text == "<think>\naWaitb\n</think>\n\nc"
    assert outs[0].forced_continuations == 1


def test_s1_layout():
    outs, backend = run({"<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n":
                         ["\nhm<|im_start|>", "ok<|im_start|>", "sure<|im_start|>", "\nAnswer: 7<|im_end|>"]}, "s1",
                        max_tokens_thinking=100, max_tokens_answer=30)
    assert outs[0].text == "<|im_start|>think\nhmWaitokWaitsure<|im_start|>answer\nAnswer: 7"
    assert backend.calls[0]["stops"] == [1000, EOS]
    assert outs[0].forced_continuations == 2


def test_plain_preset_eos_ends_thinking_and_a_natural_end_needs_no_answer_phase():
    outs, backend = run({"P": ["one<|im_end|>", "two<|im_end|>", "three<|im_end|>"]}, "plain",
                        max_tokens_thinking=100, max_tokens_answer=10)
    assert outs[0].text == "oneWaittwoWaitthree"
    assert len(backend.calls) == 3 and all(c["stops"] == [EOS] for c in backend.calls)
    assert outs[0].answer_tokens == 0 and not outs[0].budget_exhausted


def test_exhausted_budget_closes_and_forces_the_answer():
    outs, backend = run({"Q": ["abcdefghijklmnop", "4 and more text<|im_end|>"]}, "r1",
                        max_tokens_thinking=10, max_tokens_answer=5)
    out = outs[0]
    assert out.thinking_text == "abcdefghij" and out.thinking_tokens == 10
    assert out.budget_exhausted and out.forced_continuations == 0
    assert out.text == "<think>\nabcdefghij\n</think>\n\n\nFinal Answer:4 and"
    assert out.answer_tokens == 5 and out.answer_truncated


def test_plain_preset_exhausted_gets_the_final_answer_suffix():
    outs, _ = run({"P": ["xxxxxxxx", "9<|im_end|>"]}, "plain", max_tokens_thinking=4, max_tokens_answer=5)
    assert outs[0].text == "xxxx\nFinal Answer:9"


def test_forcing_stops_when_the_ignore_string_no_longer_fits():
    # budget 8: "abcde" (5) + "Wait" (4) would leave no token for the model -> close instead of forcing
    outs, backend = run({"Q": ["abcde</think>", "A<|im_end|>"]}, "r1", max_tokens_thinking=8, max_tokens_answer=5)
    assert outs[0].forced_continuations == 0 and not outs[0].budget_exhausted
    assert outs[0].text == "<think>\nabcde\n</think>\n\nA"


def test_forced_round_that_runs_out_is_exhausted():
    outs, backend = run({"Q": ["ab</think>", "cdefghijkl", "z<|im_end|>"]}, "r1", max_tokens_thinking=10,
                        max_tokens_answer=5)
    out = outs[0]
    assert out.thinking_text == "abWaitcdef" and out.thinking_tokens == 10
    assert out.forced_continuations == 1 and out.budget_exhausted
    assert backend.calls[1]["limits"] == [4]


def test_rounds_are_batched_over_the_prompts_still_thinking():
    scripts = {
        "A:": ["1</think>", "2</think>", "3</think>", "ans-a<|im_end|>"],   # forced twice
        "B:": ["long thinking " * 3, "ans-b<|im_end|>"],                   # exhausts in round 1
        "C:": ["x</think>", "y</think>", "z</think>", "ans-c<|im_end|>"],
    }
    outs, backend = run(scripts, "r1", max_tokens_thinking=20, max_tokens_answer=6)
    assert [len(c["prompts"]) for c in backend.calls] == [3, 2, 2, 3]  # rounds 1-3, then one answer call
    assert [o.text.split("</think>\n\n")[-1] for o in outs] == ["ans-a", "\nFinal Answer:ans-b", "ans-c"]
    assert [o.forced_continuations for o in outs] == [2, 0, 2]
    assert [o.budget_exhausted for o in outs] == [False, True, False]
    assert [o.thinking_tokens for o in outs] == [11, 20, 11]


def test_stop_strings_cut_the_answer_only_under_a_thinking_preset():
    backend = ScriptedBackend({"Q": ["a\n\nb</think>", "answer 1\n\nextra<|im_end|>"]})
    config = resolve_config("r1", thinking_n_ignore=0, max_tokens_thinking=20, max_tokens_answer=30)
    out = generate_with_budget(backend, [backend.encode("Q")], config, stop_strings=["\n\n"])[0]
    assert out.text == "<think>\na\n\nb\n</think>\n\nanswer 1"  # the thinking keeps its "\n\n"
    assert out.answer_text == "answer 1" and not out.answer_truncated
    # the tokens run up to the one that completed the stop string
    assert out.answer_tokens == len("answer 1\n\n") and backend.decode(out.token_ids).endswith("answer 1\n\n")


RAMBLE = "x = 2, so \\boxed{4}.\n\nProblem:\nWhat is 4 + 5?\n\nSolution: \\boxed{9}<|im_end|>"


def test_plain_preset_stops_where_a_base_model_starts_a_new_problem():
    """A base model continues into a made-up "Problem:" block; the last-box rule must not grade its box."""
    from sfn_merge_plugin.grading import grade

    outs, _ = run({"P": [RAMBLE]}, "plain", thinking_n_ignore=0, max_tokens_thinking=100, max_tokens_answer=10)
    assert grade(outs[0].text, "9") is True  # without stop strings the made-up problem's box is graded
    backend = ScriptedBackend({"P": [RAMBLE, "never used"]})
    config = resolve_config("plain", max_tokens_thinking=100, max_tokens_answer=10)
    out = generate_with_budget(backend, [backend.encode("P")], config, max_gen_toks=200,
                               stop_strings=["\nProblem:", "<|im_end|>"])[0]
    assert out.text == out.thinking_text == "x = 2, so \\boxed{4}.\n"
    assert grade(out.text, "4") and not grade(out.text, "9")
    # the stop string ends the response: no "Wait", no answer phase, not an exhausted budget
    assert len(backend.calls) == 1 and out.forced_continuations == 0 and not out.budget_exhausted
    assert out.thinking_tokens == out.generated_tokens == len("x = 2, so \\boxed{4}.\n\nProblem:")
    assert out.answer_tokens == 0


def test_plain_preset_stop_string_in_a_forced_round():
    backend = ScriptedBackend({"P": ["one<|im_end|>", "two\nProblem: 3<|im_end|>", "never used"]})
    config = resolve_config("plain", max_tokens_thinking=100, max_tokens_answer=10)
    out = generate_with_budget(backend, [backend.encode("P")], config, stop_strings=["\nProblem:"])[0]
    assert out.text == "oneWaittwo" and out.forced_continuations == 1 and len(backend.calls) == 2
    assert out.token_ids == backend.encode("oneWaittwo\nProblem:")


def test_budget_forcing_off_stops_at_the_first_stop_string():
    backend = ScriptedBackend({"Q": ["<think>\nab</think>\n\n\\boxed{1}\nProblem: \\boxed{2}\n\nProblem: z"]})
    config = resolve_config("r1", budget_forcing="false")
    out = generate_with_budget(backend, [backend.encode("Q")], config, max_gen_toks=100,
                               stop_strings=["\n\nProblem:", "\nProblem:"])[0]
    assert out.text == "<think>\nab</think>\n\n\\boxed{1}"  # the EARLIEST stop string wins
    assert out.answer_text == "\n\n\\boxed{1}" and out.thinking_tokens == 4
    assert out.token_ids == backend.encode("<think>\nab</think>\n\n\\boxed{1}\nProblem:")
    assert not out.budget_exhausted  # the scripted engine ran on, but a stop string ended the text


class StopAwareBackend(ScriptedBackend):
    """A backend that stops on strings itself: records which calls got them."""

    supports_stop_strings = True

    def generate(self, prompts, max_new_tokens, stop_token_ids, min_new_tokens=0, sampling=None, stop_strings=()):
        outs = super().generate(prompts, max_new_tokens, stop_token_ids, min_new_tokens, sampling)
        self.calls[-1]["stop_strings"] = list(stop_strings)
        return outs


@pytest.mark.parametrize("preset,overrides,expected", [
    ("plain", {}, [["\nProblem:"], ["\nProblem:"]]),                  # thinking round, forced round
    ("r1", {}, [[], [], ["\nProblem:"]]),                             # thinking rounds (a marker ends them), answer
    ("r1", {"budget_forcing": "false"}, [["\nProblem:"]]),             # one plain call
])
def test_backends_that_stop_on_strings_get_them_where_they_apply(preset, overrides, expected):
    backend = StopAwareBackend({"Q": ["a</think><|im_end|>", "b<|im_end|>", "c<|im_end|>"]})
    config = resolve_config(preset, thinking_n_ignore=1, max_tokens_thinking=50, max_tokens_answer=10, **overrides)
    generate_with_budget(backend, [backend.encode("Q")], config, stop_strings=["\nProblem:"])
    assert [c["stop_strings"] for c in backend.calls] == expected


def test_generate_with_budget_starts_each_job_with_begin():
    class Recording(ScriptedBackend):
        begun = []

        def begin(self, sampling):
            self.begun.append((len(self.calls), sampling))

    for budget_forcing in ("true", "false"):
        backend = Recording({"Q": ["a<|im_end|>", "b<|im_end|>", "c<|im_end|>"]})
        backend.begun = []
        config = resolve_config("plain", budget_forcing=budget_forcing, max_tokens_thinking=50, max_tokens_answer=5)
        generate_with_budget(backend, [backend.encode("Q")], config, sampling={"seed": 4})
        assert backend.begun == [(0, {"seed": 4})]  # once, before the first call


def test_budget_forcing_off_is_one_plain_call():
    backend = ScriptedBackend({"Q": ["<think>\nab</think>\n\nfinal<|im_end|>"]})
    config = resolve_config("r1", budget_forcing="false")
    out = generate_with_budget(backend, [backend.encode("Q")], config, max_gen_toks=100)[0]
    assert len(backend.calls) == 1 and backend.calls[0]["stops"] == [EOS] and backend.calls[0]["limits"] == [100]
    assert out.text == "<think>\nab</think>\n\nfinal" and out.forced_continuations == 0
    assert out.thinking_tokens == len(backend.encode("<think>\nab")) == 4 and out.answer_text == "\n\nfinal"


def test_auto_budgets_fill_max_gen_toks():
    config = resolve_config("r1")
    assert budgets(config, 32768, 10) == (32768 - 2048 - 10, 2048)
    assert budgets(resolve_config("r1", max_tokens_thinking=8000), 32768, 10) == (8000, 32768 - 8000 - 10)
    with pytest.raises(BudgetForcingError, match="leaves no room"):
        budgets(config, 8, 10)


def test_generated_tokens_never_exceed_max_gen_toks_with_auto_budgets():
    outs, _ = run({"Q": ["x" * 500, "y" * 500]}, "r1", max_gen_toks=64)
    assert outs[0].generated_tokens <= 64 and outs[0].budget_exhausted


def test_options_s1_names_and_errors():
    config = resolve_config("s1", thinking_n_ignore="3", thinking_n_ignore_str="Hmm", max_tokens_thinking="100")
    assert (config.thinking_n_ignore, config.thinking_n_ignore_str, config.max_tokens_thinking) == (3, "Hmm", 100)
    assert resolve_config("plain", bf_preset="qwen3").preset == "qwen3"
    assert resolve_config("r1", until_thinking_2="<|im_end|>").until_thinking == ("</think>", "<|im_end|>")
    with pytest.raises(BudgetForcingError, match="unknown budget-forcing preset 'r2'"):
        resolve_config("r2")
    with pytest.raises(BudgetForcingError, match="unknown budget-forcing option.*thinking_n_ignor\\b"):
        resolve_config("r1", thinking_n_ignor=2)
    with pytest.raises(BudgetForcingError, match="not supported"):
        resolve_config("s1", rejection_sample=True)
    with pytest.raises(BudgetForcingError, match="max_tokens_thinking must be"):
        resolve_config("r1", max_tokens_thinking="lots")
    with pytest.raises(BudgetForcingError, match="thinking_n_ignore must be >= 0"):
        resolve_config("r1", thinking_n_ignore=-1)


def test_multi_token_marker_is_refused_before_generating():
    backend = ScriptedBackend({"Q": []})
    config = resolve_config("r1", until_thinking="END")
    with pytest.raises(BudgetForcingError, match="'END' is 3 tokens"):
        generate_with_budget(backend, [backend.encode("Q")], config)
    assert backend.calls == []


# ------------------------------------------------------------------ HF backend on a tiny random Qwen2


@pytest.fixture(scope="module")
def thinker(tmp_path_factory, tiny_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from sfn_merge_plugin.evaluation.tiny_thinker import build_tiny_thinker

    torch.set_num_threads(2)
    path = build_tiny_thinker(str(tmp_path_factory.mktemp("thinker")), tokenizer=tiny_tokenizer)
    return AutoModelForCausalLM.from_pretrained(path).eval(), tiny_tokenizer


def test_hf_backend_batched_equals_one_by_one(thinker):
    """Left padding, per-prompt limits and stop handling do not change what each prompt gets."""
    import torch

    from sfn_merge_plugin.evaluation.hf_backend import HFBackend

    model, tok = thinker
    backend = HFBackend(model, tok, batch_size=4)
    prompts = [backend.encode_prompt(t) for t in ("compute 12 + 30", "hello, how are you today? i am", "x")]
    limits, stops = [6, 9, 3], [7, 9]  # arbitrary stop ids: whatever the model emits, the cut must match
    batched = backend.generate(prompts, limits, stops)
    for prompt, limit, got in zip(prompts, limits, batched):
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=limit, do_sample=False, eos_token_id=stops,
                             pad_token_id=2, temperature=None, top_p=None, top_k=None)[0, len(prompt):].tolist()
        stop_at = next((k for k, t in enumerate(ref) if t in stops), None)
        expected = ref if stop_at is None else ref[:stop_at]
        assert got.token_ids == expected and got.stopped == (stop_at is not None)
        assert len(got.token_ids) <= limit


def test_hf_generate_forces_twice_on_the_tiny_thinker(thinker):
    from sfn_merge_plugin.evaluation.hf_backend import generate

    model, tok = thinker
    outs = generate(model, tok, ["compute 12 + 30", "what is 7 * 6?"], preset="r1", chat=True, max_gen_toks=40,
                    progress=False)
    for out in outs:
        # greedy: the model closes its thinking at once; "Wait" is inserted twice (min 1 new token per round)
        assert out.forced_continuations == 2 and not out.budget_exhausted
        assert out.text.startswith("<think>\n") and out.thinking_text.count("Wait") == 2
        assert "\n</think>\n\n" in out.text
        assert out.generated_tokens == len(out.token_ids) <= 40
        # 0 tokens, "Wait", 1 token, "Wait", 1 token
        assert out.thinking_tokens == 2 * len(tok.encode("Wait", add_special_tokens=False)) + 2
    chat = tok.apply_chat_template([{"role": "user", "content": "compute 12 + 30"}], tokenize=False,
                                   add_generation_prompt=True)
    assert outs[0].prompt_tokens == len(tok.encode(chat))


def test_hf_backend_reuses_the_kv_cache_between_rounds_token_identically(thinker):
    """Forcing rounds and the answer phase feed only the new tokens (the kept cache holds the rest, across
    left padding, rows that ran past their end and rows that left the rounds early), and the forced
    outputs are token-identical to re-prefilling every round (``keep_cache_bytes=0``)."""
    from sfn_merge_plugin.evaluation.hf_backend import HFBackend, format_prompts

    model, tok = thinker
    config = resolve_config("r1", thinking_n_ignore=2, max_tokens_thinking=14, max_tokens_answer=4)
    sampling = {"do_sample": True, "temperature": 1.0, "seed": 5}  # rounds of varying length, some run out
    texts = format_prompts(tok, ["compute 12 + 30", "what is 7 * 6?", "x"], chat=True)
    runs, batch_size = {}, 2  # micro-batches of 2 and 1: left padding and a lone row
    for keep in (0, 1 << 30):
        widths = []
        hook = model.register_forward_pre_hook(lambda m, a, k: widths.append(k["input_ids"].shape[1]), with_kwargs=True)
        try:
            backend = HFBackend(model, tok, batch_size=batch_size, keep_cache_bytes=keep)
            prompts = [backend.encode_prompt(t) for t in texts]
            outs = generate_with_budget(backend, prompts, config, max_gen_toks=40, sampling=sampling)
        finally:
            hook.remove()
        runs[keep] = [o.token_ids for o in outs], [w for w in widths if w > 1], outs
    fresh, kept = runs[0], runs[1 << 30]
    assert kept[0] == fresh[0]
    first_round = -(-len(texts) // batch_size)
    assert fresh[1][:first_round] == kept[1][:first_round]
    assert min(fresh[1][first_round:]) >= min(len(p) for p in prompts)  # later calls re-prefill the prompt...
    close = len(tok.encode("\n</think>\n\n", add_special_tokens=False))
    final = len(tok.encode("\nFinal Answer:", add_special_tokens=False))
    assert max(kept[1][first_round:]) <= close + final + 1  # ...or feed "Wait" / the close (+ suffix) only
    outs = kept[2]
    assert any(o.forced_continuations for o in outs) and any(o.budget_exhausted for o in outs)
    small = HFBackend(model, tok, keep_cache_bytes=1)  # over the budget: nothing is kept
    small.generate(prompts[:1], [2], [])
    assert backend._kept.bytes > 0 and not small._kept.rows and small._kept.bytes == 0


def test_hf_generate_exhausts_when_nothing_ends_the_thinking(thinker):
    """Plain preset: only EOS ends thinking and the tiny model prefers </think>, so the budget runs out."""
    from sfn_merge_plugin.evaluation.hf_backend import generate

    model, tok = thinker
    out = generate(model, tok, ["compute 12 + 30"], preset="plain", max_tokens_thinking=5, max_tokens_answer=4,
                   progress=False)[0]
    assert out.budget_exhausted and out.thinking_tokens == 5 and out.answer_tokens <= 4
    assert out.text.startswith(out.thinking_text + "\nFinal Answer:")


# ------------------------------------------------------------------ HF backend: stop strings, seeds, decoding


@pytest.fixture(scope="module")
def random_lm(tiny_model, tiny_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    return AutoModelForCausalLM.from_pretrained(tiny_model("qwen2")).eval(), tiny_tokenizer


def test_eos_ids_include_single_token_end_markers(tiny_tokenizer):
    import types

    from sfn_merge_plugin.evaluation.hf_backend import eos_ids_of

    no_config = types.SimpleNamespace(generation_config=None)
    ids = {name: tiny_tokenizer.convert_tokens_to_ids(name) for name in ("<|im_end|>", "<|endoftext|>")}
    assert tiny_tokenizer.eos_token == "<|im_end|>"
    assert eos_ids_of(no_config, tiny_tokenizer) == (ids["<|im_end|>"], ids["<|endoftext|>"])
    with_config = types.SimpleNamespace(generation_config=types.SimpleNamespace(eos_token_id=[9, ids["<|im_end|>"]]))
    assert eos_ids_of(with_config, tiny_tokenizer) == (ids["<|im_end|>"], 9, ids["<|endoftext|>"])

    class NoMarkers:  # a tokenizer that spells the markers with several tokens: they are not EOS ids
        eos_token_id = 7

        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

        def decode(self, ids):
            return "".join(map(chr, ids))

    assert eos_ids_of(no_config, NoMarkers()) == (7,)


def test_hf_backend_stops_on_strings_and_keeps_batch_neighbours_intact(random_lm):
    from sfn_merge_plugin.evaluation.budget_forcing import stop_string_cut
    from sfn_merge_plugin.evaluation.hf_backend import HFBackend

    model, tok = random_lm
    backend = HFBackend(model, tok, batch_size=4)
    prompts = [backend.encode_prompt(t) for t in ("compute 12 + 30", "hello, how are you today? i am")]
    free = backend.generate(prompts, [16, 16], [])
    stop = backend.decode(free[0].token_ids[5:7])  # a string the model writes for prompt 0
    expected = stop_string_cut(backend.decode, free[0].token_ids, [stop])
    assert expected is not None and len(expected[0]) <= 7
    other_hits = stop_string_cut(backend.decode, free[1].token_ids, [stop])
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = backend.generate(prompts, [16, 16], [], stop_strings=[stop])
        single = backend.generate(prompts[:1], [16], [], stop_strings=[stop])
    finally:
        hook.remove()
    assert got[0].token_ids == expected[0] and got[0].stopped
    assert got[1].token_ids == (other_hits[0] if other_hits else free[1].token_ids)
    assert single[0].token_ids == expected[0]
    assert len(calls) == 16 + len(expected[0])  # alone, prompt 0 stopped generating at the stop string


def test_hf_backend_seeds_once_per_job_not_once_per_round(random_lm):
    from sfn_merge_plugin.evaluation.hf_backend import HFBackend

    model, tok = random_lm
    backend = HFBackend(model, tok)
    prompt = [backend.encode_prompt("compute 12 + 30")]
    sampling = {"do_sample": True, "temperature": 2.0, "seed": 11}
    backend.begin(sampling)
    first = backend.generate(prompt, [12], [], sampling=sampling)[0].token_ids
    second = backend.generate(prompt, [12], [], sampling=sampling)[0].token_ids
    assert first != second  # the second call (a later forcing round) draws new numbers
    backend.begin(sampling)
    assert backend.generate(prompt, [12], [], sampling=sampling)[0].token_ids == first  # a new job reproduces


def test_hf_backend_ignores_the_checkpoints_decoding_defaults(random_lm):
    """sfn-hf decodes with explicit options only, as sfn-vllm's SamplingParams: a repetition_penalty (or
    top_k) in generation_config.json must not change its output."""
    import torch

    from sfn_merge_plugin.evaluation.hf_backend import HFBackend

    model, tok = random_lm
    backend = HFBackend(model, tok)
    prompt = backend.encode_prompt("hello, how are you today? i am")
    neutral = backend.generate([prompt], [12], [])[0].token_ids
    penalised = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, repetition_penalty=50.0,
                               pad_token_id=2, eos_token_id=None)[0, len(prompt):].tolist()
    assert penalised != neutral  # the penalty matters for this model and prompt
    saved = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 50.0
    try:
        assert backend.generate([prompt], [12], [])[0].token_ids == neutral
        assert backend.generate([prompt], [12], [], sampling={"repetition_penalty": 50.0})[0].token_ids == penalised
        assert model.generation_config.repetition_penalty == 50.0  # restored after each call
    finally:
        model.generation_config.repetition_penalty = saved
