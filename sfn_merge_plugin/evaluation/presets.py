"""Budget-forcing presets per model family, and the resolution of user overrides into one config.

Field names are s1's lm-eval gen_kwargs names, so s1 command lines carry over
(``max_tokens_thinking``, ``thinking_n_ignore``, ``thinking_n_ignore_str``, ``thinking_start``,
``thinking_end``, ``until_thinking``).
"""

from __future__ import annotations

from sfn_merge_plugin.errors import SfnError

from dataclasses import asdict, dataclass, replace


class BudgetForcingError(SfnError):
    """A budget-forcing setting that cannot work (unknown preset/option, marker not one token, budget too small)."""


@dataclass(frozen=True)
class BudgetConfig:
    """How one family thinks: how the thinking opens, what ends it, how we close it and force an answer."""

    preset: str
    thinking_start: str  # appended to the prompt unless the prompt already ends with it
    until_thinking: tuple[str, ...]  # end-of-thinking markers (one token each); EOS always ends thinking too
    thinking_end: str  # what we append to close the thinking
    thinking_n_ignore: int = 2  # times an early end-of-thinking is dropped and replaced by the ignore string
    thinking_n_ignore_str: str = "Wait"
    final_answer_str: str = "\nFinal Answer:"  # appended after the close when the thinking budget ran out
    max_tokens_thinking: int | str = "auto"  # thinking budget (tokens, inserted ignore strings included)
    max_tokens_answer: int | str = "auto"  # answer-phase reserve
    min_tokens_after_ignore: int = 1  # s1: a forced round must produce at least this many tokens
    budget_forcing: bool = True  # False: one plain generate call of max_gen_toks tokens

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, dict] = {
    # s1 / s1.1 (Qwen2.5 chat format): "<|im_start|>think" ... "<|im_start|>answer"
    "s1": dict(thinking_start="<|im_start|>think", until_thinking=("<|im_start|>",), thinking_end="<|im_start|>answer"),
    # DeepSeek-R1-Distill: the chat template already ends in "<think>\n"
    "r1": dict(thinking_start="<think>\n", until_thinking=("</think>",), thinking_end="\n</think>\n\n"),
    # Qwen3 in thinking mode
    "qwen3": dict(thinking_start="<think>\n", until_thinking=("</think>",), thinking_end="\n</think>\n\n"),
    # no thinking markers: EOS ends the thinking; nothing to close
    "plain": dict(thinking_start="", until_thinking=(), thinking_end=""),
}

FIELDS = tuple(f for f in BudgetConfig.__dataclass_fields__ if f != "preset")
# accepted in model_args / gen_kwargs besides the fields
ALIASES = {"bf_preset": "preset", "until_thinking_2": "until_thinking_2"}
OPTION_NAMES = frozenset(FIELDS) | frozenset(ALIASES)
# s1 fork options we deliberately do not implement: refuse them loudly rather than ignore them
UNSUPPORTED = frozenset({"rejection_sample", "scale_func_name", "temperature_thinking", "min_tokens_thinking"})


def detect_preset(tokenizer) -> str:
    """``r1`` when ``</think>`` is one token of the tokenizer, else ``plain`` (s1 models need ``bf_preset=s1``)."""
    try:
        ids = tokenizer.encode("</think>", add_special_tokens=False)
    except Exception:  # pragma: no cover - exotic tokenizers
        return "plain"
    return "r1" if len(ids) == 1 else "plain"


def _as_bool(name, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise BudgetForcingError(f"{name} must be true or false, got {value!r}")


def _as_budget(name, value):
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BudgetForcingError(f"{name} must be a number of tokens or 'auto', got {value!r}") from None
    if number < 1:
        raise BudgetForcingError(f"{name} must be at least 1 token, got {number}")
    return number


def _as_count(name, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BudgetForcingError(f"{name} must be a whole number, got {value!r}") from None
    if number < 0:
        raise BudgetForcingError(f"{name} must be >= 0, got {number}")
    return number


def resolve_config(preset: str = "auto", tokenizer=None, **overrides) -> BudgetConfig:
    """A ``BudgetConfig`` from a preset name (``auto`` detects it from ``tokenizer``) and field overrides."""
    unsupported = sorted(set(overrides) & UNSUPPORTED)
    if unsupported:
        raise BudgetForcingError(f"s1 option(s) {', '.join(unsupported)} are not supported by SfN's budget forcing; remove them")
    unknown = sorted(set(overrides) - OPTION_NAMES)
    if unknown:
        raise BudgetForcingError(
            f"unknown budget-forcing option(s) {', '.join(unknown)}; known: bf_preset, {', '.join(FIELDS)}, until_thinking_2"
        )
    overrides = dict(overrides)
    preset = overrides.pop("bf_preset", None) or preset or "auto"
    if preset == "auto":
        if tokenizer is None:
            raise BudgetForcingError("bf_preset=auto needs the tokenizer; pass a preset: " + ", ".join(PRESETS))
        preset = detect_preset(tokenizer)
    if preset not in PRESETS:
        raise BudgetForcingError(f"unknown budget-forcing preset {preset!r}; choose one of {', '.join(PRESETS)} or auto")
    config = BudgetConfig(preset=preset, **PRESETS[preset])
    markers = overrides.pop("until_thinking", None)
    second = overrides.pop("until_thinking_2", None)
    if markers is not None or second is not None:
        base = config.until_thinking if markers is None else (
            tuple(m for m in str(markers).split("|") if m) if isinstance(markers, str) else tuple(markers))
        config = replace(config, until_thinking=base + ((str(second),) if second else ()))
    converted = {}
    for name, value in overrides.items():
        if name in ("max_tokens_thinking", "max_tokens_answer"):
            converted[name] = _as_budget(name, value)
        elif name in ("thinking_n_ignore", "min_tokens_after_ignore"):
            converted[name] = _as_count(name, value)
        elif name == "budget_forcing":
            converted[name] = _as_bool(name, value)
        else:
            converted[name] = "" if value is None else str(value)
    return replace(config, **converted)


def budgets(config: BudgetConfig, max_gen_toks: int, delimiter_tokens: int) -> tuple[int, int]:
    """(thinking budget, answer reserve) in tokens. ``auto`` answer = min(2048, max_gen_toks // 4); ``auto``
    thinking = what is left of ``max_gen_toks`` after the answer reserve and the delimiters we insert."""
    answer = config.max_tokens_answer
    thinking = config.max_tokens_thinking
    if answer == "auto":
        answer = (max_gen_toks - thinking - delimiter_tokens) if thinking != "auto" else min(2048, max(1, max_gen_toks // 4))
    if thinking == "auto":
        thinking = max_gen_toks - answer - delimiter_tokens
    if thinking < 1 or answer < 1:
        raise BudgetForcingError(
            f"max_gen_toks={max_gen_toks} leaves no room (thinking {thinking}, answer {answer}, delimiters "
            f"{delimiter_tokens} tokens); raise max_gen_toks or set max_tokens_thinking / max_tokens_answer"
        )
    return int(thinking), int(answer)
