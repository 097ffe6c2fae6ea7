"""Destroy one module kind at a time (Zero, ReInit, Remove) in layers of a model, generate on many prompts,
and grade every response automatically: Level I random tokens, II fluent but off-context, III in context,
IV reasons correctly (the paper's Table 3, with evidence). One model is loaded; each destruction is
applied in memory and undone exactly, with the same selectors and kernels as mergekit's sfn_destroy.

  sfn destroy-sweep MODEL --modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \\
      --methods zero,reinit,remove --layers 5-30 -o sweep/
  sfn destroy-sweep MODEL --modules attn,mlp --layers 0.2-0.5 --per-layer -o sweep_layers/

Rows of --modules are comma-separated kinds or groups (qkv, attn, mlp, norm); join kinds with '+' for one
row (q_proj+k_proj). Writes table3.md, table3.csv, responses.jsonl, sweep.json and, with --per-layer,
levels_heatmap.png. The classifier and its calibration are described in docs/destruction.md."""


def add_arguments(p):
    p.add_argument("model", help="local model folder (safetensors; a hub id is fetched when online)")
    p.add_argument("--modules", required=True,
                   help="sweep rows: e.g. q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj; groups attn, qkv, mlp, "
                        "norm; 'q_proj+k_proj' destroys both in one row; or one 're:<regex>' on tensor names")
    p.add_argument("--methods", default="zero,reinit,remove", help="any of zero, reinit, remove (default: all three)")
    p.add_argument("--layers", required=True,
                   help='layers to destroy: "5-30" (the paper, 64 layers), "0-3,10", fractions of depth "0.1-0.5", or "all"')
    p.add_argument("--per-layer", action="store_true", help="destroy one layer at a time (layer x module heatmap)")
    p.add_argument("-o", "--output", required=True, help="folder for table3.md/csv, responses.jsonl, sweep.json")
    g = p.add_argument_group("prompts and decoding")
    g.add_argument("--prompts", metavar="JSONL", help='replace the built-in prompts: lines {"prompt": ..., "id": ..., "answer": ...}')
    g.add_argument("--add-prompts", metavar="JSONL", help="add these prompts to the built-in ones")
    g.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto",
                   help="wrap prompts in the tokenizer's chat template (auto: when it has one)")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding (seeded by --seed)")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--batch-size", type=int, default=16, help="prompts generated together")
    g.add_argument("--probes", type=int, default=4, help="prompts whose logits decide equivalence classes (default 4)")
    d = p.add_argument_group("destruction")
    d.add_argument("--seed", type=int, default=0, help="ReInit draw and sampling seed (ReInit matches sfn_destroy's seed)")
    d.add_argument("--mean", type=float, default=0.0, help="ReInit mean (default 0)")
    d.add_argument("--std", type=float, default=0.02, help="ReInit std (default 0.02, the paper's)")
    r = p.add_argument_group("runtime")
    r.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="load dtype (auto: as stored)")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args):
    from sfn_merge_plugin.errors import UserError
    from sfn_merge_plugin.sweep.generate import Decoding
    from sfn_merge_plugin.sweep.prompts import PromptError, prompt_set
    from sfn_merge_plugin.sweep.report import console_summary
    from sfn_merge_plugin.sweep.runner import run_sweep

    if args.prompts and args.add_prompts:
        raise UserError("use either --prompts (replace the built-in prompts) or --add-prompts (extend them), not both")
    if args.std < 0:
        raise UserError(f"--std must be >= 0, got {args.std}")
    try:
        file = args.prompts or args.add_prompts
        prompts = prompt_set(file, extend=bool(args.add_prompts))
    except PromptError as exc:
        raise UserError(str(exc)) from None
    decoding = Decoding(
        max_new_tokens=args.max_new_tokens, sample=args.sample, temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, chat_template={"auto": None, "on": True, "off": False}[args.chat_template],
        batch_size=args.batch_size,
    )
    result = run_sweep(args.model, args.modules, args.methods, args.layers, args.output, prompts=prompts,
                       per_layer=args.per_layer, decoding=decoding, seed=args.seed, mean=args.mean, std=args.std,
                       probes=args.probes, dtype=args.dtype, device=args.device, progress=not args.no_progress)
    print(console_summary(result))
    print(f"written: {args.output}/table3.md, table3.csv, responses.jsonl, sweep.json"
          + (", levels_heatmap.png" if args.per_layer else ""))
    return 0
