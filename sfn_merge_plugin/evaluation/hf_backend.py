"""Budget forcing on any Hugging Face causal LM (CPU or GPU), and the convenience ``generate`` other tools call.

    from sfn_merge_plugin.evaluation.hf_backend import generate
    outs = generate(model, tokenizer, ["What is 2+3?"], preset="r1", chat=True, max_tokens_thinking=512)
    outs[0].text, outs[0].generated_tokens, outs[0].forced_continuations, outs[0].budget_exhausted
"""

from __future__ import annotations

import contextlib
from typing import Sequence

from sfn_merge_plugin.evaluation.budget_forcing import Completion, ForcedGeneration, generate_with_budget
from sfn_merge_plugin.evaluation.kv_reuse import KEEP_CACHE_BYTES, REUSABLE_DECODING, KeptCache, left_padded
from sfn_merge_plugin.evaluation.presets import resolve_config

SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "seed")
# end-of-turn / end-of-document tokens of the Qwen / ChatML families: a base model that writes one is done
END_TOKENS = ("<|im_end|>", "<|endoftext|>")


def _single_token_id(tokenizer, text: str) -> int | None:
    """The id of ``text`` when the tokenizer has it as ONE token that decodes back to it, else None."""
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except Exception:  # pragma: no cover - exotic tokenizers
        return None
    if len(ids) != 1 or tokenizer.decode(ids) != text:
        return None
    return int(ids[0])


def eos_ids_of(model, tokenizer) -> tuple[int, ...]:
    """Every id that ends a generation: the tokenizer's EOS, the model's generation_config EOS list, and
    ``<|im_end|>`` / ``<|endoftext|>`` where the tokenizer has them as single tokens (a Qwen2.5 base model's
    EOS is ``<|endoftext|>``, but a merge with a chat model may end its turn with ``<|im_end|>``)."""
    ids = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, config_eos):
        if value is None:
            continue
        ids += list(value) if isinstance(value, (list, tuple)) else [value]
    ids += [i for i in (_single_token_id(tokenizer, t) for t in END_TOKENS) if i is not None]
    return tuple(dict.fromkeys(int(i) for i in ids))


class _StopOnStrings:
    """A ``model.generate`` stopping criterion: a row is finished once the text it generated (the prompt is
    never searched) contains a stop string. Only the tail that can hold a new occurrence is decoded."""

    def __init__(self, tokenizer, stop_strings, prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stop_strings if s]
        self.width = prompt_width
        self.tail = max(len(s) for s in self.stops) + 1  # a token decodes to at least one character

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, self.width:]
        done = [any(s in self.tokenizer.decode(row[-self.tail:].tolist(), skip_special_tokens=False) for s in self.stops)
                for row in new]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@contextlib.contextmanager
def blank_generation_config(model):
    """While inside, ``model.generation_config`` is a blank GenerationConfig, so ``model.generate`` fills every
    option the caller leaves unset from transformers' neutral defaults, never from the checkpoint's
    generation_config.json (its repetition_penalty, top_k, min_p...). Restored on exit."""
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield model
    finally:
        model.generation_config = saved


class HFBackend:
    """The loop's backend on ``model.generate``: left-padded micro-batches, per-prompt token limits.

    Decoding is explicit, as in ``VLLMBackend``: the model's ``generation_config`` supplies only the EOS ids
    (``eos_ids_of``), never decoding defaults (repetition_penalty, top_k, temperature...): every knob is
    transformers' neutral default unless given in ``sampling``. Sampling with a ``seed`` seeds torch's RNG
    once per job (``begin``), not once per call, so the forcing rounds draw fresh random numbers.

    ``keep_cache_bytes``: the KV cache of each call is kept (up to this many bytes; 0: off) so that the next
    call's prompts that extend its rows (the next forcing round: prompt + thinking + "Wait") feed only their
    new tokens instead of re-prefilling (``kv_reuse.KeptCache``); greedy outputs stay token-identical."""

    supports_stop_strings = True

    def __init__(self, model, tokenizer, batch_size: int = 8, progress: bool = False,
                 keep_cache_bytes: int = KEEP_CACHE_BYTES):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.eos_token_ids = eos_ids_of(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else (self.eos_token_ids[0] if self.eos_token_ids else 0))
        self._seeded = False
        self.keep_cache_bytes = max(0, int(keep_cache_bytes))
        self._kept = KeptCache()  # the KV cache of the previous call's rows, for prompts that extend them

    def begin(self, sampling: dict | None = None):
        """Start a job: the next sampled ``generate`` call seeds torch's RNG (once) with ``sampling['seed']``;
        the KV cache kept from an earlier job is dropped."""
        self._seeded = False
        self._kept = KeptCache()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt with the tokenizer's own special tokens (BOS), unless the text already starts with BOS."""
        bos = self.tokenizer.bos_token
        add = not (bos and text.startswith(bos))
        return list(self.tokenizer.encode(text, add_special_tokens=add))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=False)

    def _generate_kwargs(self, sampling: dict | None) -> dict:
        """Explicit decoding options: greedy, or sampling with temperature (default 1.0), top_p (default 1.0)
        and top_k (default off), as vLLM's SamplingParams; other keys (repetition_penalty...) pass through."""
        sampling = dict(sampling or {})
        seed = sampling.pop("seed", None)
        do_sample = bool(sampling.pop("do_sample", False))
        if do_sample and seed is not None and not self._seeded:
            import torch

            torch.manual_seed(int(seed))
            self._seeded = True
        kwargs = {"do_sample": do_sample}
        if do_sample:
            kwargs.update(temperature=1.0, top_p=1.0, top_k=0)  # vLLM's defaults (transformers' own top_k is 50)
            for key in ("temperature", "top_p", "top_k"):
                if sampling.get(key) is not None:
                    kwargs[key] = sampling[key]
        for key in ("temperature", "top_p", "top_k"):
            sampling.pop(key, None)
        kwargs.update(sampling)  # other HF generate options (repetition_penalty, ...)
        return kwargs

    def generate(self, prompts, max_new_tokens, stop_token_ids, min_new_tokens=0, sampling=None,
                 stop_strings=()) -> list[Completion]:
        import torch

        from sfn_merge_plugin.evaluation.budget_forcing import stop_string_cut

        stops = [int(t) for t in stop_token_ids]
        stop_strings = [s for s in stop_strings if s]
        results: list[Completion | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        order_todo = [i for i in order if max_new_tokens[i] > 0]
        for i in order:
            if max_new_tokens[i] <= 0:
                results[i] = Completion([], stopped=False)
        kwargs = self._generate_kwargs(sampling)
        device = next(self.model.parameters()).device
        chunks = [order_todo[k:k + self.batch_size] for k in range(0, len(order_todo), self.batch_size)]
        bar = None
        if self.progress and len(chunks) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(chunks), desc="generate", leave=False)
        # KV reuse (greedy or plain sampling only: penalties would see the layout's padding differently)
        keep = self.keep_cache_bytes > 0 and set(kwargs) <= REUSABLE_DECODING
        kept, self._kept = self._kept, KeptCache()
        for chunk in chunks:
            batch = [prompts[i] for i in chunk]
            layout = kept.layout(batch, self.pad_token_id) if keep else None
            if layout is None:
                layout = left_padded(batch, self.pad_token_id)
            ids, mask, past = layout
            width = ids.shape[1]
            limit = max(max_new_tokens[i] for i in chunk)
            extra = {"min_new_tokens": min_new_tokens} if min_new_tokens else {}
            if stop_strings:
                from transformers import StoppingCriteriaList

                extra["stopping_criteria"] = StoppingCriteriaList([_StopOnStrings(self.tokenizer, stop_strings, width)])
            if keep:
                extra.update(return_dict_in_generate=True, cache=past)
            with torch.no_grad(), blank_generation_config(self.model):
                out = self.model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=limit,
                    eos_token_id=stops or None, pad_token_id=self.pad_token_id, **extra, **kwargs,
                )
            if keep:
                out, cache = out.sequences, out.cache
                self._kept.add(cache, out, mask, self.keep_cache_bytes)
            new = out[:, width:].tolist()
            for row, i in enumerate(chunk):
                tokens = new[row][: max_new_tokens[i]]
                stop_at = next((k for k, t in enumerate(tokens) if t in stops), None)
                if stop_at is not None:
                    tokens, token = tokens[:stop_at], tokens[stop_at]
                cut = stop_string_cut(self.decode, tokens, stop_strings)
                if cut is not None:  # finished by a stop string (what follows is padding)
                    results[i] = Completion(cut[0], stopped=True)
                elif stop_at is None:
                    results[i] = Completion(tokens, stopped=False)
                else:
                    results[i] = Completion(tokens, stopped=True, stop_token_id=token)
            if bar:
                bar.update(1)
        if keep:
            self._kept.inherit(kept, self.keep_cache_bytes)
        if bar:
            bar.close()
        return results


def generate_ids(model, tokenizer, prompt_ids, max_new_tokens: int, *, sampling: dict | None = None,
                 batch_size: int = 8) -> list[Completion]:
    """One generation round on token-id prompts, the stack every SfN tool shares (evaluation, the destruction
    sweep, ``sfn localize``): left-padded micro-batches of similar length, the KV cache, each row stopped at
    the first of ``eos_ids_of`` (tokenizer EOS, generation_config EOS, ``<|im_end|>``/``<|endoftext|>``).
    ``sampling``: None for greedy, else ``{"do_sample": True, "temperature": ..., "top_p": ..., "seed": ...}``
    (the seed is applied once, at the start of this call). Returns one ``Completion`` per prompt."""
    backend = HFBackend(model, tokenizer, batch_size=batch_size, keep_cache_bytes=0)  # one call: nothing to reuse
    backend.begin(sampling)
    n = len(prompt_ids)
    return backend.generate([list(p) for p in prompt_ids], [int(max_new_tokens)] * n, backend.eos_token_ids,
                            sampling=sampling)


def format_prompts(tokenizer, prompts, chat: bool = False, system: str | None = None) -> list[str]:
    """Prompt strings; with ``chat`` each prompt (a string or a list of messages) goes through the chat template."""
    if not chat:
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError("message lists need chat=True")
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True but this tokenizer has no chat template; use chat=False (plain generation)")
    out = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system and isinstance(prompt, str):
            messages.insert(0, {"role": "system", "content": system})
        out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out


def generate(model, tokenizer, prompts, preset: str = "auto", *, chat: bool = False, max_gen_toks: int = 4096,
             batch_size: int = 8, budget_forcing: bool = True, do_sample: bool = False, temperature: float | None = None,
             top_p: float | None = None, top_k: int | None = None, seed: int | None = None,
             stop_strings: Sequence[str] = (), progress: bool = True, **overrides) -> list[ForcedGeneration]:
    """Budget-forced generation from an HF model + tokenizer on a list of prompts.

    ``preset``: s1 | r1 | qwen3 | plain | auto; ``overrides``: any preset field (``max_tokens_thinking``,
    ``thinking_n_ignore``, ``thinking_n_ignore_str``, ``max_tokens_answer``...). ``chat`` applies the chat
    template. Returns one ``ForcedGeneration`` per prompt (``.text``, ``.generated_tokens``,
    ``.thinking_tokens``, ``.forced_continuations``, ``.budget_exhausted``, ``.stats()``)."""
    config = resolve_config(preset, tokenizer=tokenizer, budget_forcing=budget_forcing, **overrides)
    backend = HFBackend(model, tokenizer, batch_size=batch_size, progress=progress)
    texts = format_prompts(tokenizer, prompts, chat=chat)
    encoded = [backend.encode_prompt(t) for t in texts]
    sampling = {"do_sample": do_sample, "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed}
    return generate_with_budget(backend, encoded, config, max_gen_toks=max_gen_toks, sampling=sampling,
                                stop_strings=stop_strings, progress=progress)
