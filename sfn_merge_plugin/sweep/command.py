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
    from sfn_merge_plugin.planning import MEAN_RANGE, STD_RANGE
    from sfn_merge_plugin.validation import number

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
    g.add_argument("--max-new-tokens", type=number(1, 1_000_000, int), default=128, help="tokens generated per prompt (default 128)")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding (seeded by --seed)")
    g.add_argument("--temperature", type=number(0.0, 100.0, lo_open=True), default=0.7, help="sampling temperature (default 0.7)")
    g.add_argument("--top-p", type=number(0.0, 1.0, lo_open=True), default=0.95, help="nucleus sampling mass, in (0, 1] (default 0.95)")
    g.add_argument("--batch-size", type=number(1, 65536, int), default=16, help="prompts generated together")
    g.add_argument("--probes", type=number(1, 100_000, int), default=4, help="prompts whose logits decide equivalence classes (default 4)")
    d = p.add_argument_group("destruction")
    d.add_argument("--seed", type=number(0, 2 ** 63 - 1, int), default=0, help="ReInit draw and sampling seed (ReInit matches sfn_destroy's seed)")
    d.add_argument("--mean", type=number(*MEAN_RANGE), default=0.0, help=f"ReInit mean, finite, in {list(MEAN_RANGE)} (default 0)")
    d.add_argument("--std", type=number(*STD_RANGE), default=0.02, help=f"ReInit std, in {list(STD_RANGE)} (default 0.02, the paper's)")
    r = p.add_argument_group("runtime")
    r.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="load dtype (auto: as stored)")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--force", action="store_true", help="write into OUTPUT even if it is a non-empty folder SfN did not write")


def run(args):
    from sfn_merge_plugin.errors import UserError
    from sfn_merge_plugin.sweep.generate import Decoding
    from sfn_merge_plugin.sweep.prompts import PromptError, prompt_set
    from sfn_merge_plugin.sweep.report import console_summary
    from sfn_merge_plugin.sweep.runner import run_sweep

    if args.prompts and args.add_prompts:
        raise UserError("use either --prompts (replace the built-in prompts) or --add-prompts (extend them), not both")
    from sfn_merge_plugin.outputs import check_output_folder

    check_device(args.device)
    check_tokenizer_files(args.model)
    check_output_folder(args.output, force=args.force)  # before loading anything
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
    from sfn_merge_plugin.outputs import claim_folder

    claim_folder(args.output, "destroy-sweep", force=True)  # SfN's now: a rerun may replace its files
    print(console_summary(result))
    print(f"written: {args.output}/table3.md, table3.csv, responses.jsonl, sweep.json"
          + (", levels_heatmap.png" if args.per_layer else ""))
    return 0


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_device(device) -> None:
    """``--device``: cpu, cuda[:N] (with that GPU present) or mps; else one line before anything loads."""
    import re

    from sfn_merge_plugin.errors import UsageError

    if device is None:
        return
    m = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", device)
    if not m or (m.group(1) != "cuda" and m.group(2)):
        raise UsageError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or mps")
    import torch

    if m.group(1) == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is available to this torch ({torch.__version__}); use --device cpu")
        if m.group(2) and int(m.group(2)) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s) (cuda:0-"
                             f"cuda:{torch.cuda.device_count() - 1})")
    if m.group(1) == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu")


def check_tokenizer_files(model: str) -> None:
    """A local model folder must hold its tokenizer: the sweep generates text."""
    import os

    from sfn_merge_plugin.errors import UsageError

    path = os.path.expanduser(str(model))
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")) and \
            not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        raise UsageError(f"{model}: no tokenizer files here ({', '.join(TOKENIZER_FILES)}); the sweep generates text, so "
                         "copy the tokenizer from the model it was made from (e.g. tokenizer.save_pretrained)")
