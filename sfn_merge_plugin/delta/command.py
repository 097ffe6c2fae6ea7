"""Delta Stethoscope: how much each module of each layer moved between a base model and its fine-tune(s).

    sfn delta Qwen/Qwen2.5-Math-1.5B deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B -o delta/

Streams both checkpoints tensor by tensor in row chunks (memory stays flat whatever the model size) and
writes, per tensor (per block of fused tensors): ||A||, ||B||, ||B-A||, ||B-A||/||A||, cos(A,B), max|B-A|,
the fraction of changed elements, and the exact histogram of r = (b-a)/(|a|+eps) over all elements
(mass beyond the range kept apart, never folded into the edge bins). Then per module kind and layer,
the paper's claims as checks, and the figures (Fig. 2/3 style).

Output: DIR/delta.csv, DIR/summary.json, DIR/histograms.json, DIR/delta_norms.png, DIR/relative_hist.png
(redraw with `sfn delta-plot DIR`). Several fine-tunes: one CSV column set per pair (`norm_delta:<label>`).
"""


def add_arguments(p):
    from sfn_merge_plugin.validation import number

    p.add_argument("base", help="the base model: local folder or hub id")
    p.add_argument("tuned", nargs="+", help="the fine-tune(s) of BASE: local folders or hub ids")
    p.add_argument("-o", "--output", required=True, help="folder for the results (created if missing)")
    p.add_argument("--label", action="append", default=None, metavar="NAME",
                   help="name of a fine-tune in the outputs (repeat once per fine-tune; default: its folder name)")
    p.add_argument("--modules", default=None,
                   help='only these module kinds, an SfN selector: "o_proj", "attn,mlp", "re:<regex>" (default: all)')
    p.add_argument("--layers", default=None, help='only these layers: "5-30", "0-3,10", "0.5-1.0" (default: all)')
    p.add_argument("--bins", type=number(1, 100_000, int), default=201,
                   help="histogram bins on [-range, range) (default 201: r = 0 mid-bin; the paper used 200)")
    p.add_argument("--range", type=float, default=1.0, dest="hist_range", metavar="R",
                   help="histogram range R: bins cover [-R, R); the mass beyond is reported apart (default 1)")
    p.add_argument("--eps", type=float, default=1e-8, help="eps in r = (b-a)/(|a|+eps) (default 1e-8, the paper's)")
    p.add_argument("--every", type=number(1, 100_000, int), default=None,
                   help="relative_hist.png: a row every K layers (default: about 6 rows, the paper's 5 at 28 layers)")
    p.add_argument("--no-plots", action="store_true", help="write the CSV/JSON only (draw later with sfn delta-plot)")
    p.add_argument("--threads", type=number(1, 1024, int), default=None, help="worker threads (default: the CPUs available, max 8)")
    p.add_argument("--chunk-mb", type=number(0.0, 65536.0, lo_open=True), default=8.0, help="rows read per chunk and model, in MiB (default 8)")
    p.add_argument("--allow-bin", action="store_true",
                   help="also read PyTorch .bin checkpoints (torch.load with weights_only=True); off by default")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="write into OUTPUT even if it is a non-empty folder SfN did not write")


def run(args):
    from sfn_merge_plugin.errors import UserError
    from sfn_merge_plugin.delta.pairing import DeltaError
    from sfn_merge_plugin.delta.report import console_table
    from sfn_merge_plugin.delta.run import run_delta
    from sfn_merge_plugin.outputs import check_output_folder, claim_folder

    check_output_folder(args.output, force=args.force)  # before reading any tensor
    try:
        summary = run_delta(args.base, args.tuned, args.output, labels=args.label, modules=args.modules,
                            layers=args.layers, allow_bin=args.allow_bin, bins=args.bins, hist_range=args.hist_range,
                            eps=args.eps, plots=not args.no_plots, every=args.every, threads=args.threads,
                            chunk_mb=args.chunk_mb, progress=not args.no_progress)
    except DeltaError as exc:
        raise UserError(str(exc)) from None
    claim_folder(args.output, "delta", force=True)  # SfN's now: a rerun or delta-plot may replace its files
    print(console_table(summary))
    print(f"\nwrote {args.output}/: delta.csv, summary.json, histograms.json"
          + ("" if args.no_plots else ", delta_norms.png, relative_hist*.png"))
    return 0
