"""The one module taxonomy every stethoscope uses: tensor name -> (layer, canonical module kind).

Canonical kinds per layer: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj and the norms
(input_layernorm, post_attention_layernorm, pre/post_feedforward_layernorm, q_norm, k_norm);
model-level: embed, final_norm, lm_head. Fused tensors (Phi-3 ``qkv_proj``/``gate_up_proj``,
GPT-2 ``c_attn``) are described as blocks, so selecting ``q_proj`` acts on the q block only.

Which tensors a model has comes from its checkpoint (the names in its safetensors headers); this
file names their layer and module. mergekit's architecture data drives the merges themselves. A module includes its bias.
"""

from __future__ import annotations

from sfn_merge_plugin.errors import TaxonomyError  # noqa: F401  (re-exported)

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
LAYER_NORMS = (
    "input_layernorm",
    "q_norm",
    "k_norm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)
LAYER_KINDS = ATTN + MLP + LAYER_NORMS
MODEL_KINDS = ("embed", "final_norm", "lm_head")
KINDS = ("embed",) + LAYER_KINDS + ("final_norm", "lm_head")
NORM_KINDS = LAYER_NORMS + ("final_norm",)
GROUPS = {
    "attn": ATTN,
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "mlp": MLP,
    "norm": NORM_KINDS,
}

# Architectures whose names were checked against transformers' modelling code.
SUPPORTED_ARCHITECTURES = (
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Gemma2ForCausalLM",
    "Phi3ForCausalLM",
    "GPT2LMHeadModel",
)

_LAYER_RE = re.compile(r"^(?:model\.|transformer\.)?(?:layers|h)\.(\d+)\.(.+)\.(weight|bias)$")
_MODEL_LEVEL = {
    "model.embed_tokens": "embed",
    "transformer.wte": "embed",
    "transformer.wpe": "embed",
    "wte": "embed",
    "wpe": "embed",
    "model.norm": "final_norm",
    "transformer.ln_f": "final_norm",
    "ln_f": "final_norm",
    "lm_head": "lm_head",
}
# module path inside a layer -> canonical kind, or a fused layout name
_LAYER_MODULES = {
    "self_attn.q_proj": "q_proj",
    "self_attn.k_proj": "k_proj",
    "self_attn.v_proj": "v_proj",
    "self_attn.o_proj": "o_proj",
    "self_attn.q_norm": "q_norm",
    "self_attn.k_norm": "k_norm",
    "mlp.gate_proj": "gate_proj",
    "mlp.up_proj": "up_proj",
    "mlp.down_proj": "down_proj",
    "input_layernorm": "input_layernorm",
    "post_attention_layernorm": "post_attention_layernorm",
    "pre_feedforward_layernorm": "pre_feedforward_layernorm",
    "post_feedforward_layernorm": "post_feedforward_layernorm",
    # Phi-3
    "self_attn.qkv_proj": "fused:qkv_rows",
    "mlp.gate_up_proj": "fused:gate_up_rows",
    # GPT-2 (Conv1D stores weights as [in, out])
    "attn.c_attn": "fused:qkv_conv1d",
    "attn.c_proj": "o_proj",
    "mlp.c_fc": "up_proj",
    "mlp.c_proj": "down_proj",
    "ln_1": "input_layernorm",
    "ln_2": "post_attention_layernorm",
}




@dataclass(frozen=True)
class Block:
    """Rows/columns ``[start, stop)`` along ``dim`` of a fused tensor that belong to ``kind``."""

    kind: str
    dim: int
    start: int
    stop: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    layer: Optional[int]  # None for model-level tensors
    module: str  # canonical kind, or "qkv_proj"/"gate_up_proj" for fused tensors
    blocks: tuple = field(default=())  # Blocks for fused tensors, () otherwise
    tied_to: Optional[str] = None  # lm_head of a tied model: not stored, it *is* this embedding tensor

    @property
    def kinds(self) -> tuple:
        return tuple(b.kind for b in self.blocks) if self.blocks else (self.module,)

    @property
    def is_bias(self) -> bool:
        return self.name.endswith(".bias")


@dataclass(frozen=True)
class ModelLayout:
    """What the taxonomy knows about one model: its architecture, depth and every tensor."""

    architecture: str
    num_layers: int
    tensors: tuple  # TensorInfo, in checkpoint order
    tied_embeddings: bool

    def by_name(self) -> dict:
        return {t.name: t for t in self.tensors}

    def kinds_present(self) -> list:
        present = {k for t in self.tensors for k in t.kinds}
        return [k for k in KINDS if k in present]


def config_value(config, *names, default=None):
    """The first of ``names`` set in a config (a dict or a PretrainedConfig), else ``default``."""
    for n in names:
        v = config.get(n) if isinstance(config, Mapping) else getattr(config, n, None)
        if v is not None:
            return v
    return default


def architecture_of(config) -> str:
    archs = config_value(config, "architectures") or []
    if len(archs) != 1:
        raise TaxonomyError(f"config.json must name exactly one architecture, found {archs!r}")
    return archs[0]


def num_layers_of(config) -> int:
    n = config_value(config, "num_hidden_layers", "n_layer")
    if n is None:
        raise TaxonomyError("config has neither num_hidden_layers nor n_layer")
    return int(n)


def _fused_blocks(layout: str, name: str, config) -> tuple:
    hidden = int(config_value(config, "hidden_size", "n_embd"))
    if layout == "fused:qkv_rows":
        heads = int(config_value(config, "num_attention_heads"))
        kv = int(config_value(config, "num_key_value_heads", default=heads))
        head_dim = int(config_value(config, "head_dim", default=hidden // heads))
        q, k = heads * head_dim, kv * head_dim
        return (Block("q_proj", 0, 0, q), Block("k_proj", 0, q, q + k), Block("v_proj", 0, q + k, q + 2 * k))
    if layout == "fused:gate_up_rows":
        inter = int(config_value(config, "intermediate_size"))
        return (Block("gate_proj", 0, 0, inter), Block("up_proj", 0, inter, 2 * inter))
    if layout == "fused:qkv_conv1d":
        dim = 0 if name.endswith(".bias") else 1  # Conv1D weight is [in, 3*out]
        return tuple(Block(k, dim, i * hidden, (i + 1) * hidden) for i, k in enumerate(("q_proj", "k_proj", "v_proj")))
    raise AssertionError(layout)


_FUSED_NAMES = {"fused:qkv_rows": "qkv_proj", "fused:gate_up_rows": "gate_up_proj", "fused:qkv_conv1d": "qkv_proj"}


def layer_of(name: str) -> Optional[int]:
    """The layer index in a tensor name, None for model-level tensors."""
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else None


def classify(name: str, config) -> TensorInfo:
    """Map one tensor name to its layer and module kind, or raise TaxonomyError naming it."""
    m = _LAYER_RE.match(name)
    if m:
        layer, path = int(m.group(1)), m.group(2)
        kind = _LAYER_MODULES.get(path)
        if kind is None:
            raise TaxonomyError(
                f"tensor {name!r} ({architecture_of(config)}): module {path!r} is not in SfN's taxonomy; "
                f"known layer modules: {', '.join(sorted(_LAYER_MODULES))}"
            )
        if kind.startswith("fused:"):
            return TensorInfo(name, layer, _FUSED_NAMES[kind], _fused_blocks(kind, name, config))
        return TensorInfo(name, layer, kind)
    stem = name.rsplit(".", 1)[0]
    kind = _MODEL_LEVEL.get(stem)
    if kind is None:
        raise TaxonomyError(f"tensor {name!r} ({architecture_of(config)}) is not in SfN's taxonomy")
    return TensorInfo(name, None, kind)


def check_architecture(config) -> str:
    arch = architecture_of(config)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise TaxonomyError(
            f"architecture {arch!r} is not mapped by SfN's module taxonomy; supported: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}. Use a 're:<regex>' module selector on full tensor "
            "names with other architectures' tools, or open an issue with the model's config.json."
        )
    return arch


def layout_from_names(config, names: Iterable[str]) -> ModelLayout:
    """Describe a model from its config and the tensor names its checkpoint holds."""
    arch = check_architecture(config)
    names = list(names)
    infos = tuple(classify(n, config) for n in names)
    has_head = any(t.module == "lm_head" for t in infos)
    tied = bool(config_value(config, "tie_word_embeddings", default=True)) and not has_head
    if tied:
        embed = next((n for n in ("model.embed_tokens.weight", "transformer.wte.weight", "wte.weight") if n in names), None)
        if embed is not None:
            infos += (TensorInfo("lm_head.weight", None, "lm_head", tied_to=embed),)
    return ModelLayout(arch, num_layers_of(config), infos, tied)

