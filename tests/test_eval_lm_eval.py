"""lm-eval integration: the hook (our tasks found with no flag, user tasks still win, built-in models intact),
the models sfn-hf / sfn-vllm, and one real `lm_eval` run on a tiny model with MADE-UP rows."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sfn_merge_plugin.evaluation.lm_eval_hook import task_dir, with_sfn_tasks

HOOKS_OFF = os.environ.get("SFN_DISABLE_HOOKS", "").strip().lower() not in ("", "0", "false", "no")


def test_sfn_folder_goes_first_so_user_paths_win():
    ours = task_dir()
    assert with_sfn_tasks(None) == [ours]
    assert with_sfn_tasks("/mine") == [ours, "/mine"]
    assert with_sfn_tasks(["/a", ours, "/b"]) == [ours, "/a", "/b"]


@pytest.mark.skipif(HOOKS_OFF, reason="SFN_DISABLE_HOOKS is set")
def test_task_manager_indexes_our_tasks_and_a_user_task_of_the_same_name_wins(tmp_path):
    from lm_eval.tasks import TaskManager

    (tmp_path / "mine.yaml").write_text("task: sfn_aime24\ndataset_path: madeup/none\noutput_type: generate_until\n"
                                        "doc_to_text: '{{x}}'\ndoc_to_target: y\ntest_split: test\n")
    # include_defaults=False asks for the caller's folders only: SfN's tasks are not added (lm-eval's own suite checks it)
    assert "sfn_math500" not in TaskManager(include_path=str(tmp_path), include_defaults=False).all_tasks
    # with defaults, the hook puts SfN's folder before the user's (indexing lm-eval's defaults takes ~1 min, so the
    # same path list is given explicitly here)
    manager = TaskManager(include_path=with_sfn_tasks(str(tmp_path)), include_defaults=False)
    index = manager.task_index
    assert Path(index["sfn_aime24"].yaml_path) == tmp_path / "mine.yaml"
    assert Path(index["sfn_math500"].yaml_path) == Path(task_dir()) / "sfn_math500.yaml"
    assert {"sfn_reasoning", "sfn_reasoning_gen", "sfn_gpqa_diamond"} <= set(manager.all_tasks)


@pytest.mark.skipif(HOOKS_OFF, reason="SFN_DISABLE_HOOKS is set")
def test_models_register_after_the_builtins():
    from lm_eval.api.registry import get_model

    from sfn_merge_plugin.evaluation.lm_eval_models import SfnHFLM, SfnVLLM

    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own models still load
    assert get_model("sfn-hf") is SfnHFLM and get_model("sfn-vllm") is SfnVLLM


def test_bad_budget_options_fail_before_the_model_loads():
    from sfn_merge_plugin.evaluation.lm_eval_models import SfnHFLM
    from sfn_merge_plugin.evaluation.presets import BudgetForcingError

    with pytest.raises(BudgetForcingError, match="unknown budget-forcing preset"):
        SfnHFLM(pretrained="/no/such/model", bf_preset="r7")
    with pytest.raises(BudgetForcingError, match="thinking_n_ignore must be"):
        SfnHFLM(pretrained="/no/such/model", thinking_n_ignore="many")
    with pytest.raises(BudgetForcingError, match="think_end_token"):
        SfnHFLM(pretrained="/no/such/model", think_end_token="</think>")


def test_vllm_is_lazy():
    code = ("import sys, sfn_merge_plugin.evaluation.lm_eval_models as m, sfn_merge_plugin.evaluation.vllm_backend; "
            "print('vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_sfn_vllm_without_vllm_says_how_to_install():
    from sfn_merge_plugin.evaluation.lm_eval_models import SfnVLLM

    with pytest.raises(ImportError, match=r"sfn-merge-plugin\[vllm\]"):
        SfnVLLM.create_from_arg_string("pretrained=x")


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in ``vllm`` module: SamplingParams is a dict of what was asked, TokensPrompt a dict."""

    class SamplingParams(dict):
        def __init__(self, **kw):
            super().__init__(**kw)

    fake = types.ModuleType("vllm")
    fake.SamplingParams = SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return fake


def test_vllm_backend_translation_with_a_fake_engine(fake_vllm):
    """Token prompts, per-request limits, greedy -> temperature 0, stop token removed from vLLM's token_ids."""

    class Engine:
        def generate(self, prompts, params, use_tqdm=False):
            self.seen = (prompts, params)
            out = lambda ids, finish, reason: types.SimpleNamespace(outputs=[types.SimpleNamespace(  # noqa: E731
                token_ids=ids, finish_reason=finish, stop_reason=reason)])
            # a stop token id (stop_reason = the id), the token limit, the model's own EOS (stop_reason None)
            return [out([7, 8, 5], "stop", 5), out([9, 9, 9], "length", None), out([4, 2], "stop", None)]

    from sfn_merge_plugin.evaluation.vllm_backend import VLLMBackend

    engine = Engine()
    backend = VLLMBackend(engine, tokenizer=None, eos_token_ids=[1])
    got = backend.generate([[3, 4], [3], [6], [8]], [10, 3, 0, 5], [5, 1], min_new_tokens=1,
                           sampling={"do_sample": False})
    assert [(c.token_ids, c.stopped, c.stop_token_id) for c in got] == [
        ([7, 8], True, 5), ([9, 9, 9], False, None), ([], False, None), ([4], True, 2)]
    prompts, params = engine.seen
    assert prompts == [{"prompt_token_ids": p} for p in ([3, 4], [3], [8])]  # the 0-token request is not sent
    assert params[0] == {"max_tokens": 10, "min_tokens": 1, "stop_token_ids": [1, 5], "skip_special_tokens": False,
                         "temperature": 0.0}
    sampled = backend.sampling_params(5, [1], 0, {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "seed": 3})
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.6, 0.95, 3)
    assert "stop" not in params[0] and "repetition_penalty" not in params[0]  # vLLM's neutral defaults


class EchoEngine:
    """Returns one token per request (finished by EOS 1) and keeps every SamplingParams it was given."""

    def __init__(self):
        self.params = []

    def generate(self, prompts, params, use_tqdm=False):
        self.params += params
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[4, 1], finish_reason="stop",
                                                                     stop_reason=None)]) for _ in prompts]


def test_vllm_requests_get_distinct_deterministic_seeds(fake_vllm):
    """k repeats of a prompt with one seed must be k different samples: request i of a job gets seed + i."""
    from sfn_merge_plugin.evaluation.vllm_backend import VLLMBackend

    engine = EchoEngine()
    backend = VLLMBackend(engine, tokenizer=None, eos_token_ids=[1])
    sampling = {"do_sample": True, "temperature": 0.6, "seed": 10}
    backend.begin(sampling)
    backend.generate([[3], [3], [3]], [5, 5, 5], [1], sampling=sampling)  # three repeats of one prompt
    backend.generate([[3], [3]], [5, 0], [1], sampling=sampling)  # a later round: the 0-token request is not sent
    assert [p["seed"] for p in engine.params] == [10, 11, 12, 13]
    backend.begin(sampling)  # a new job starts again at the seed
    backend.generate([[3]], [5], [1], sampling=sampling)
    assert engine.params[-1]["seed"] == 10
    backend.generate([[3]], [5], [1], sampling={"do_sample": True})  # no seed: vLLM's own randomness
    assert "seed" not in engine.params[-1]


def test_vllm_stop_strings_become_stop_params(fake_vllm):
    from sfn_merge_plugin.evaluation.vllm_backend import VLLMBackend

    engine = EchoEngine()
    backend = VLLMBackend(engine, tokenizer=None, eos_token_ids=[1])
    assert backend.supports_stop_strings
    backend.generate([[3]], [5], [1], stop_strings=["\nProblem:"])
    assert engine.params[-1]["stop"] == ["\nProblem:"] and engine.params[-1]["include_stop_str_in_output"] is True


def test_gen_tasks_stop_where_a_new_problem_starts_and_chat_tasks_do_not():
    from lm_eval.tasks._yaml_loader import load_yaml

    for name in ("sfn_aime24_gen", "sfn_math500_gen", "sfn_gpqa_diamond_gen"):
        cfg = load_yaml(Path(task_dir()) / f"{name}.yaml", resolve_func=False)
        gen = cfg["generation_kwargs"]
        assert gen["until"] == ["\nProblem:", "\nAnswer the following multiple choice question", "<|im_end|>",
                                "<|endoftext|>"], name
        assert (gen["do_sample"], gen["max_gen_toks"]) == (False, 32768) and cfg["task"] == name
        assert cfg["metric_list"] and cfg["output_type"] == "generate_until"  # the common settings still apply
    for name in ("sfn_aime24", "sfn_math500", "sfn_gpqa_diamond"):
        assert load_yaml(Path(task_dir()) / f"{name}.yaml", resolve_func=False)["generation_kwargs"]["until"] == []


def test_hf_batch_size_auto_is_detected_not_silently_replaced():
    from sfn_merge_plugin.evaluation.lm_eval_models import hf_batch_size
    from sfn_merge_plugin.evaluation.presets import BudgetForcingError

    class LM:
        def __init__(self, batch_size):
            self.batch_size = batch_size

        def _detect_batch_size(self):
            return 13

    assert hf_batch_size(LM(4)) == 4
    assert hf_batch_size(LM("auto")) == 13  # lm-eval's HFLM stores "auto:4" as "auto" too
    assert hf_batch_size(LM("6")) == 6
    with pytest.raises(BudgetForcingError, match="batch_size 'many'"):
        hf_batch_size(LM("many"))


# ------------------------------------------------------------------------- one real lm_eval run (subprocess)

MADEUP_AIME = [{"ID": f"madeup-aime-{i}", "Problem": f"Made-up problem {i}: compute {i} + 40.", "Solution": "made up",
                "Answer": 40 + i} for i in (1, 2)]
MADEUP_GPQA = [{"Question": f"Made-up question {i}: pick the made-up right option.", "Correct Answer": "made-up right",
                "Incorrect Answer 1": "made-up wrong 1", "Incorrect Answer 2": "made-up wrong 2",
                "Incorrect Answer 3": "made-up wrong 3", "Record ID": f"madeup-rec-{i}"} for i in (1, 2)]


def test_lm_eval_cli_runs_our_tasks_with_no_include_path(tmp_path, tiny_tokenizer):
    from sfn_merge_plugin.evaluation.tiny_thinker import build_tiny_thinker

    model = build_tiny_thinker(str(tmp_path / "thinker"), tokenizer=tiny_tokenizer)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name, rows in (("aime24", MADEUP_AIME), ("gpqa_diamond", MADEUP_GPQA)):
        (data_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {k: v for k, v in os.environ.items() if k not in ("SFN_DISABLE_HOOKS", "SFN_AIME24_PATH", "SFN_GPQA_DIAMOND_PATH")}
    env.update(SFN_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="2",
               TOKENIZERS_PARALLELISM="false")
    lm_eval = Path(sys.executable).with_name("lm_eval")
    cmd = [str(lm_eval) if lm_eval.exists() else "lm_eval", "--model", "sfn-hf",
           "--model_args", f"pretrained={model},bf_preset=r1,dtype=float32", "--device", "cpu", "--batch_size", "2",
           "--tasks", "sfn_aime24,sfn_gpqa_diamond", "--apply_chat_template", "--gen_kwargs", "max_gen_toks=40",
           "--limit", "2", "--output_path", str(tmp_path / "out"), "--log_samples"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    for task in ("sfn_aime24", "sfn_gpqa_diamond"):
        r = results[task]
        assert r["accuracy,none"] == 0.0  # a random model answers nothing right
        assert r["forced_continuations,none"] == 2.0 and r["budget_exhausted,none"] == 0.0
        assert 0 < r["thinking_tokens,none"] < r["generated_tokens,none"] <= 40
    samples = [json.loads(line) for f in (tmp_path / "out").rglob("samples_sfn_gpqa_diamond_*.jsonl")
               for line in f.read_text().splitlines()]
    assert len(samples) == 2
    for sample in samples:
        prompt = sample["arguments"]["gen_args_0"]["arg_0"]
        assert prompt.startswith("<|im_start|>user\nAnswer the following multiple choice question")
        assert prompt.endswith("<|im_start|>assistant\n") and "made-up right" in prompt
        response = sample["resps"][0][0]
        assert response.startswith("<think>\n") and response.count("Wait") == 2 and "<sfn-stats>" in response
