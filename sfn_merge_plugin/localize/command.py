"""Which modules of a fine-tune carry its ability, layer window by layer window, with causal evidence:

  sfn localize BASE TUNED --task chain -o map/ [--modules q_proj,...,norm] [--window 4] [--samples 3]

For every (module row) x (window of consecutive layers): sufficiency = the base with only these tensors
from the tune; necessity = the tune with only these reverted to the base. One model is loaded per
direction and the other model's tensors are streamed per cell from its checkpoint, then restored exactly.
Each cell is graded on the task (grading.grade; greedy or --samples k) with 95% bootstrap intervals, and a
few chat prompts get the destruction sweep's conversation levels. Writes map.csv, map.json,
sufficiency.png, necessity.png and summary.md. See docs/localize.md."""

from sfn_merge_plugin.localize.plan import DEFAULT_MODULES, DIRECTIONS, MapConfig

_D = MapConfig("", "")  # the defaults, from one place


def add_arguments(p):
    p.add_argument("base", help="base model folder (safetensors)")
    p.add_argument("tuned", help="fine-tuned model folder (same architecture and depth)")
    p.add_argument("--task", default=_D.task,
                   help="chain or addition (the lab's tasks, offline), math500, aime24, gpqa_diamond (data via SFN_DATA_DIR), or a "
                        'FILE.jsonl of {"prompt", "answer", "kind": math|aime|gpqa} (default: %(default)s)')
    p.add_argument("-o", "--output", required=True, help="folder for map.csv, map.json, the heatmaps and summary.md")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder SfN did not create")
    g = p.add_argument_group("cells")
    g.add_argument("--modules", default=DEFAULT_MODULES,
                   help="module rows: kinds or groups (attn, qkv, mlp, norm), comma-separated; 'q_proj+k_proj' is one "
                        "row (default: %(default)s)")
    g.add_argument("--window", type=int, default=_D.window, help="consecutive layers per cell (default: %(default)s)")
    g.add_argument("--directions", default=",".join(DIRECTIONS),
                   help="sufficiency, necessity or both (default: %(default)s); both ends are always measured")
    g.add_argument("--consistency", action="store_true",
                   help="also run the all-modules cell of each direction and check it equals the other model "
                        "(needs memory for a second copy of the model)")
    b = p.add_argument_group("budget and decoding")
    b.add_argument("--problems", type=int, default=_D.problems, help="problems per cell (default: %(default)s)")
    b.add_argument("--samples", type=int, default=_D.samples, help="1: greedy; k: k samples per problem (default: %(default)s)")
    b.add_argument("--temperature", type=float, default=_D.temperature, help="sampling temperature (default: %(default)s)")
    b.add_argument("--top-p", type=float, default=_D.top_p, help="nucleus sampling (default: %(default)s)")
    b.add_argument("--max-new-tokens", type=int, default=_D.max_new_tokens, help="tokens per response (default: %(default)s)")
    b.add_argument("--chat-prompts", type=int, default=_D.chat_prompts,
                   help="conversation prompts per cell for the level check, 0 for none (default: %(default)s)")
    b.add_argument("--chat-tokens", type=int, default=_D.chat_tokens, help="tokens per chat response (default: %(default)s)")
    b.add_argument("--batch-size", type=int, default=_D.batch_size, help="prompts generated together (default: %(default)s)")
    b.add_argument("--bootstrap", type=int, default=_D.bootstrap, help="bootstrap resamples (default: %(default)s)")
    b.add_argument("--seed", type=int, default=_D.seed, help="chain problems, sampling and bootstrap seed (default: %(default)s)")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    r.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="load dtype (default: as stored)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args) -> MapConfig:
    directions = tuple(d.strip() for d in args.directions.split(",") if d.strip())
    return MapConfig(
        base=args.base, tuned=args.tuned, task=args.task, out=args.output, modules=args.modules, window=args.window,
        directions=directions, problems=args.problems, samples=args.samples, temperature=args.temperature,
        top_p=args.top_p, max_new_tokens=args.max_new_tokens, chat_prompts=args.chat_prompts,
        chat_tokens=args.chat_tokens, batch_size=args.batch_size, bootstrap=args.bootstrap, seed=args.seed,
        consistency=args.consistency, device=args.device, dtype=args.dtype, force=args.force,
        progress=not args.no_progress)


def run(args) -> int:
    from sfn_merge_plugin.localize.report import summary_lines
    from sfn_merge_plugin.localize.run import run_map

    result = run_map(config_from_args(args))
    print("\n".join(summary_lines(result)))
    print(f"written: {args.output}/map.csv, map.json, summary.md, "
          + ", ".join(f"{d}.png" for d in result.config.directions))
    return 0
