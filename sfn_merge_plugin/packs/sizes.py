"""How big a pack is for a real model, from its config numbers alone (no download): exact and LoRA.

    python -m sfn_merge_plugin.packs.sizes                          # print the Markdown table
    python -m sfn_merge_plugin.packs.sizes --update docs/packs.md   # rewrite it between the markers there

Counts per module kind follow the Qwen2 / Llama layouts: o_proj is (heads x head_dim) -> hidden, q/k/v
hidden -> heads (kv heads) x head_dim (+ bias with Qwen2), gate/up hidden -> intermediate, down back, two
RMSNorms per layer + the final one, embedding vocab x hidden and an untied head the same.
"""

from __future__ import annotations

import sys

# config.json numbers of the paper's models (hub configs; the Delta/Merge pairs and the Table 2 model)
REAL_CONFIGS = {
    "Qwen2.5-32B(-Instruct)": dict(hidden_size=5120, num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8,
                                   intermediate_size=27648, vocab_size=152064, tie_word_embeddings=False, qkv_bias=True),
    "Qwen2.5-Math-1.5B": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                              intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, qkv_bias=True),
    "DeepSeek-R1-Distill-Qwen-1.5B": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                                          num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                                          tie_word_embeddings=False, qkv_bias=True),
}
BYTES = 2  # bf16, the paper's dtype
RANKS = (16, 64, 256)


def module_shapes(cfg: dict) -> dict:
    """kind -> (per-layer count of (out, in) matrices or vectors, total values) for one model."""
    h, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv, inter, v = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, cfg["intermediate_size"], cfg["vocab_size"]
    bias = cfg.get("qkv_bias", False)
    mats = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}
    out = {k: {"matrix": s, "values": L * (s[0] * s[1] + (s[0] if bias and k in ("q_proj", "k_proj", "v_proj") else 0))}
           for k, s in mats.items()}
    out["norm"] = {"matrix": None, "values": L * 2 * h + h}
    out["embed"] = {"matrix": None, "values": v * h}
    out["lm_head"] = {"matrix": None, "values": v * h}  # selected on a tied base, the pack stores it (untied)
    return out


def pack_size(cfg: dict, kinds: tuple, rank: int | None = None, dtype_bytes: int = BYTES) -> int:
    """Bytes of a pack of ``kinds`` (exact with ``rank=None``; else LoRA of rank r on the matrices, others whole)."""
    shapes, L = module_shapes(cfg), cfg["num_hidden_layers"]
    total = 0
    for k in kinds:
        s = shapes[k]
        if rank is None or s["matrix"] is None:
            total += s["values"]
        else:
            out_dim, in_dim = s["matrix"]
            total += L * min(rank, min(out_dim, in_dim)) * (out_dim + in_dim)
    return total * dtype_bytes


def model_size(cfg: dict, dtype_bytes: int = BYTES) -> int:
    """Bytes of the whole model (a tied head is not stored)."""
    shapes = module_shapes(cfg)
    tied = shapes["lm_head"]["values"] if cfg.get("tie_word_embeddings") else 0
    return (sum(s["values"] for s in shapes.values()) - tied) * dtype_bytes


def table(configs: dict = REAL_CONFIGS, ranks=RANKS) -> str:
    """Markdown: per model, the o_proj and o_proj+norm+embed+head packs, exact and at several LoRA ranks."""
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    head = "| model | pack | exact MiB | " + " | ".join(f"LoRA r={r} MiB" for r in ranks) + " | exact / model |"
    lines = [head, "|" + "---|" * (4 + len(ranks))]
    for name, cfg in configs.items():
        for label, kinds in (("o_proj", ("o_proj",)), ("o_proj+norm", ("o_proj", "norm")),
                             ("o_proj+norm+embed+head", ("o_proj", "norm", "embed", "lm_head"))):
            exact = pack_size(cfg, kinds)
            lora = " | ".join(mib(pack_size(cfg, kinds, r)) for r in ranks)
            lines.append(f"| {name} | {label} | {mib(exact)} | {lora} | {exact / model_size(cfg):.1%} |")
    shape = module_shapes(REAL_CONFIGS["Qwen2.5-32B(-Instruct)"])["o_proj"]["matrix"]
    lines.append(f"\nbf16; a LoRA pack keeps norms, embeddings and head whole; lm_head counted as stored (selecting it "
                 f"on a tied base unties it). Qwen2.5-32B o_proj: 64 layers x {shape[0]} x {shape[1]}.")
    return "\n".join(lines)


BEGIN, END = "<!-- pack sizes: begin (python -m sfn_merge_plugin.packs.sizes --update docs/packs.md) -->", "<!-- pack sizes: end -->"


def update(doc_path: str) -> None:
    """Replace the table between ``BEGIN`` and ``END`` in a Markdown file."""
    from sfn_merge_plugin.outputs import atomic_write

    text = open(doc_path, encoding="utf-8").read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc_path}: no {BEGIN!r} ... {END!r} markers")
    head, rest = text.split(BEGIN, 1)
    atomic_write(doc_path, head + BEGIN + "\n" + table() + "\n" + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update"] and len(sys.argv) == 3:
        update(sys.argv[2])
    elif sys.argv[1:]:
        raise SystemExit("usage: python -m sfn_merge_plugin.packs.sizes [--update DOC.md]")
    else:
        print(table())
