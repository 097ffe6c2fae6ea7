"""Build a tiny random base model and a perturbed 'fine-tune' of it, locally (no download), as
OUT/base and OUT/tuned: enough to try every SfN tool in seconds."""


def add_arguments(p):
    from sfn_merge_plugin.tiny_models import ARCHS
    from sfn_merge_plugin.validation import number

    p.add_argument("-o", "--output", required=True, help="folder to create (holds base/ and tuned/)")
    p.add_argument("--arch", default="qwen2", choices=ARCHS)
    p.add_argument("--layers", type=number(1, 64, int), default=4, help="decoder layers (default 4)")
    p.add_argument("--scale", type=number(0.0, 100.0), default=0.1, help="size of the random change, relative to each tensor's std")
    p.add_argument("--tied", action="store_true", help="tie the base's lm_head to its embedding")
    p.add_argument("--seed", type=number(0, 2 ** 31 - 1, int), default=0)
    p.add_argument("--force", action="store_true", help="write into OUTPUT even if it is a non-empty folder SfN did not write")


def run(args):
    from sfn_merge_plugin.outputs import check_output_folder, claim_folder
    from sfn_merge_plugin.tiny_models import build_tiny_pair

    check_output_folder(args.output, force=args.force)
    base, tuned = build_tiny_pair(args.output, args.arch, seed=args.seed, scale=args.scale, layers=args.layers, tied=args.tied)
    claim_folder(args.output, "tiny-pair", force=True)
    print(f"base:  {base}\ntuned: {tuned}")
    return 0
