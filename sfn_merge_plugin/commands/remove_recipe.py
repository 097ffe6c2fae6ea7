"""Write a mergekit recipe that removes whole layers (the paper's Remove), e.g.

    sfn remove-recipe Qwen/Qwen2.5-32B --layers 5-30 -o remove.yml
    mergekit-yaml remove.yml out/

The recipe is a mergekit ``passthrough`` with ``slices``; SfN's hook makes its output load on
transformers 5 (per-layer config lists such as ``layer_types`` are shrunk to the kept layers)."""


def add_arguments(p):
    p.add_argument("model", help="local folder or hub id")
    p.add_argument("--layers", required=True, help='layers to remove: "5-30", "0-3,10", "0.5-1.0" (fraction of depth)')
    p.add_argument("-o", "--output", required=True, help="recipe file to write")
    p.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32", "float64"),
                   help="dtype of the output (default: as stored)")
    p.add_argument("--force", action="store_true", help="replace OUTPUT even if it is a file SfN did not write")


def run(args):
    from sfn_merge_plugin.remove_layers import write_remove_recipe

    print(write_remove_recipe(args.model, args.layers, args.output, args.dtype, force=args.force), end="")
    print(f"# written to {args.output}; run: mergekit-yaml {args.output} OUT_DIR")
    return 0
