"""Redraw the Delta Stethoscope's figures from a folder written by `sfn delta` (its summary.json and
histograms.json): delta_norms.png (Fig. 2 style) and relative_hist.png (Fig. 3 style).

    sfn delta-plot delta/ --every 2
"""


def add_arguments(p):
    p.add_argument("folder", help="the folder `sfn delta -o FOLDER` wrote")
    from sfn_merge_plugin.validation import number

    p.add_argument("--every", type=number(1, 100_000, int), default=None,
                   help="relative_hist.png: a row every K layers (default: about 6 rows)")


def run(args):
    from sfn_merge_plugin.errors import UserError
    from sfn_merge_plugin.delta.pairing import DeltaError
    from sfn_merge_plugin.delta.plots import draw_all

    if args.every is not None and args.every < 1:
        raise UserError(f"--every must be >= 1, got {args.every}")
    try:
        written = draw_all(args.folder, every=args.every)
    except DeltaError as exc:
        raise UserError(str(exc)) from None
    for path in written:
        print(path)
    return 0
