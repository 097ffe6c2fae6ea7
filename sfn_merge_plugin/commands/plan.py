"""Dry-run a mergekit recipe: print, per layer, the tensors an SfN recipe selects (or the layers a
slices recipe keeps), reading only configs and safetensors headers. Exits 2 on any recipe error."""

def add_arguments(p):
    p.add_argument("recipe", help="a mergekit YAML recipe (sfn_swap, sfn_destroy or passthrough slices)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (tensor -> modules)")


def load_merge_config(path: str):
    """The recipe as a mergekit MergeConfiguration, read strictly (see ``recipe_file``)."""
    from sfn_merge_plugin.recipe_file import load_recipe

    return load_recipe(path)[0]


def run(args):
    import json

    import mergekit.merge_methods  # noqa: F401  (the hook registers SfN's methods)

    from sfn_merge_plugin.planning import plan_from_merge_config
    from sfn_merge_plugin.selectors import summarize

    config = load_merge_config(args.recipe)
    plan = plan_from_merge_config(config)
    if plan is None:
        from sfn_merge_plugin.mergekit_plugin import is_layer_removal

        if is_layer_removal(config):
            from sfn_merge_plugin.planning import check_dtypes, check_slices
            from sfn_merge_plugin.remove_layers import slices_provenance

            check_dtypes(config)  # what the merge checks, so the dry run fails where the merge would
            check_slices(config)

            record = slices_provenance(config, [])
            print(record["sfn_operation"])
            return 0
        print(f"{config.merge_method} is not an SfN method: nothing to plan (mergekit runs it as usual)")
        return 0
    if args.json:
        print(json.dumps({n: list(s.kinds) for n, s in plan.selected.items()}, indent=1))
        return 0
    from sfn_merge_plugin.provenance import operation_line

    print(operation_line(plan))
    table = summarize(list(plan.selected.values()))
    for key in sorted(table, key=lambda k: (k != "model", k if k != "model" else -1)):
        label = "model-level" if key == "model" else f"layer {key:>3}"
        print(f"  {label}: {', '.join(table[key])}")
    print(f"{len(plan.selected)} tensors selected of {len(plan.base.tensors)} in the base")
    for note in plan.notes:
        print(f"note: {note}")
    return 0
