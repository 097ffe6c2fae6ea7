"""lm-eval models ``sfn-hf`` and ``sfn-vllm``: lm-eval's HF / vLLM models whose ``generate_until`` runs
SfN's budget-forcing loop. Everything else (loading, chat templates, loglikelihood) is lm-eval's own.

    lm_eval --model sfn-hf --model_args pretrained=MODEL,bf_preset=r1 --tasks sfn_aime24 --apply_chat_template
    lm_eval --model sfn-vllm --model_args pretrained=MODEL,bf_preset=s1,tensor_parallel_size=8 --tasks sfn_reasoning
    lm_eval --model sfn-hf --model_args pretrained=BASE,pack=reasoning.sfnpack --tasks sfn_aime24   # base + pack

Budget-forcing options go in ``--model_args`` (defaults for the run) or ``--gen_kwargs`` (s1's names).
"""

from __future__ import annotations

import functools
import json
import logging

from lm_eval.api.model import LM
from lm_eval.models.huggingface import HFLM

from sfn_merge_plugin.evaluation.budget_forcing import generate_with_budget, marker_token_ids
from sfn_merge_plugin.evaluation.metrics import attach_stats
from sfn_merge_plugin.evaluation.presets import OPTION_NAMES, UNSUPPORTED, BudgetForcingError, budgets, resolve_config

log = logging.getLogger("sfn.eval")
BF_KEYS = OPTION_NAMES | UNSUPPORTED


def pop_budget_options(kwargs: dict) -> dict:
    """Remove and return the budget-forcing options from model_args / gen_kwargs."""
    return {key: kwargs.pop(key) for key in list(kwargs) if key in BF_KEYS}


def _check_options(options: dict):
    """Validate option names and values before any model is loaded (``auto`` is resolved later)."""
    resolve_config("plain", **{k: v for k, v in options.items() if k != "bf_preset"})
    preset = options.get("bf_preset") or "auto"
    if preset != "auto":
        resolve_config(preset)


def _reject_think_end_token(kwargs: dict):
    if kwargs.get("think_end_token") is not None:
        raise BudgetForcingError("think_end_token strips the reasoning trace and conflicts with budget forcing; remove it "
                                 "(SfN's grader splits at the end-of-thinking marker itself)")


def run_generate_until(lm, requests, backend, defaults: dict, disable_tqdm: bool = False) -> list[str]:
    """lm-eval's generate_until for both models: one budget-forcing run per distinct gen_kwargs group."""
    groups: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
    from lm_eval.models.utils import normalize_gen_kwargs

    results: list[str | None] = [None] * len(requests)
    for indices in groups.values():
        gen_kwargs = dict(requests[indices[0]].args[1])
        options = {**defaults, **pop_budget_options(gen_kwargs)}
        preset = options.pop("bf_preset", None) or "auto"
        config = resolve_config(preset, tokenizer=lm.tokenizer, **options)
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, lm.max_gen_toks))
        until = [u for u in kwargs.pop("until", []) or [] if u]
        max_gen_toks = int(kwargs.pop("max_gen_toks"))
        kwargs.pop("max_length", None)
        if not kwargs.get("do_sample"):
            kwargs.pop("temperature", None)
        contexts = [requests[i].args[0] for i in indices]
        prompts = [list(lm.tok_encode(c)) for c in contexts]
        prompts = _fit_context(lm, backend, config, prompts, max_gen_toks)
        if not disable_tqdm:
            log.info("sfn budget forcing: %d prompts, preset %s, %s", len(prompts), config.preset,
                     "budget_forcing=false" if not config.budget_forcing else
                     f"Wait x{config.thinking_n_ignore}, max_gen_toks {max_gen_toks}")
        outs = generate_with_budget(backend, prompts, config, max_gen_toks=max_gen_toks, sampling=kwargs,
                                    stop_strings=until, progress=not disable_tqdm)
        for index, out in zip(indices, outs):
            text = attach_stats(out.text, out.stats())
            results[index] = text
            lm.cache_hook.add_partial("generate_until", requests[index].args, text)
    return results


def _fit_context(lm, backend, config, prompts, max_gen_toks):
    """Left-truncate prompts so prompt + the longest possible continuation fits the model (as lm-eval's HFLM does)."""
    if config.budget_forcing:
        enc = backend.encode
        delimiters = sum(len(enc(s)) for s in (config.thinking_start, config.thinking_end, config.final_answer_str) if s)
        thinking, answer = budgets(config, max_gen_toks, delimiters)
        marker_token_ids(backend, config.until_thinking)  # fail early on a multi-token marker
        needed = thinking + answer + delimiters
    else:
        needed = max_gen_toks
    room = int(lm.max_length) - needed
    if room < 1:
        raise BudgetForcingError(f"the continuation may reach {needed} tokens but the model holds {lm.max_length}; lower "
                                 "max_gen_toks (or max_tokens_thinking / max_tokens_answer) or raise max_length")
    cut = sum(len(p) > room for p in prompts)
    if cut:
        log.warning("sfn: %d prompt(s) longer than %d tokens were left-truncated to fit the model", cut, room)
    return [p[-room:] for p in prompts]


class SfnHFLM(HFLM):
    """lm-eval's ``hf`` model with budget forcing (``--model sfn-hf``); runs any HF causal LM, CPU included."""

    def __init__(self, pretrained="", bf_preset: str = "auto", pack: str | None = None, **kwargs):
        """``pack=FOLDER``: evaluate the base with an SfN pack (exact or LoRA) applied in memory, no merged copy."""
        options = pop_budget_options(kwargs)
        options["bf_preset"] = bf_preset
        _check_options(options)
        _reject_think_end_token(kwargs)
        if pack:
            from sfn_merge_plugin.packs.manifest import pack_kind

            pack_kind(pack)  # a missing or foreign folder fails before the model loads
        super().__init__(pretrained=pretrained, **kwargs)
        self._sfn_options = options
        resolve_config(tokenizer=self.tokenizer, **options)
        self._sfn_pack = None
        if pack:
            from sfn_merge_plugin.packs.hotswap import activate_for_run

            self._sfn_pack = activate_for_run(self.model, pack)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from sfn_merge_plugin.evaluation.hf_backend import HFBackend

        backend = HFBackend(self.model, self.tokenizer, batch_size=hf_batch_size(self), progress=not disable_tqdm)
        return run_generate_until(self, requests, backend, self._sfn_options, disable_tqdm)


def hf_batch_size(lm) -> int:
    """The micro-batch of ``sfn-hf``: ``--batch_size N``, or with ``auto`` / ``auto:N`` the size lm-eval's own
    probe finds (``HFLM._detect_batch_size``: the largest batch, up to ``max_batch_size``, whose forward pass
    over ``max_length`` tokens fits in memory), detected once per ``generate_until`` as ``--model hf`` does."""
    size = lm.batch_size
    if isinstance(size, int) and not isinstance(size, bool):
        return max(1, size)
    if str(size).startswith("auto"):
        detected = int(lm._detect_batch_size())
        log.info("sfn-hf: --batch_size %s: detected batch size %d", size, detected)
        return max(1, detected)
    try:
        return max(1, int(size))
    except (TypeError, ValueError):
        raise BudgetForcingError(f"batch_size {size!r}: expected a number, 'auto' or 'auto:N'") from None


@functools.cache
def _vllm_class():
    try:
        from lm_eval.models.vllm_causallms import VLLM
    except ImportError as exc:
        raise ImportError(f"--model sfn-vllm needs vLLM ({exc}); install it with pip install 'sfn-merge-plugin[vllm]' "
                          "or use --model sfn-hf") from None

    class SfnVLLMImpl(VLLM):
        def __init__(self, pretrained, bf_preset: str = "auto", **kwargs):
            options = pop_budget_options(kwargs)
            options["bf_preset"] = bf_preset
            _check_options(options)
            _reject_think_end_token(kwargs)
            if int(kwargs.get("data_parallel_size", 1)) > 1:
                raise BudgetForcingError("sfn-vllm runs one engine: use tensor_parallel_size, not data_parallel_size")
            kwargs.setdefault("enable_prefix_caching", True)  # every forcing round re-sends the same prefix
            super().__init__(pretrained=pretrained, **kwargs)
            self._sfn_options = options
            resolve_config(tokenizer=self.tokenizer, **options)

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            from sfn_merge_plugin.evaluation.vllm_backend import VLLMBackend

            return run_generate_until(self, requests, VLLMBackend(self.model, self.tokenizer), self._sfn_options,
                                      disable_tqdm)

    SfnVLLMImpl.__name__ = SfnVLLMImpl.__qualname__ = "SfnVLLM"
    return SfnVLLMImpl


class SfnVLLM(LM):
    """lm-eval's ``vllm`` model with budget forcing (``--model sfn-vllm``). vLLM is imported only when this
    model is built, so importing this module never needs it."""

    def __new__(cls, *args, **kwargs):
        return _vllm_class()(*args, **kwargs)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        return _vllm_class().create_from_arg_string(arg_string, additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        return _vllm_class().create_from_arg_obj(arg_dict, additional_config)
