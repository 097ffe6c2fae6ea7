"""``sfn localize``: which modules of a fine-tune carry an ability, layer window by layer window, measured
causally (sufficiency: base + these tensors from the tune; necessity: tune with these reverted) on one
loaded model with the intervention engine, graded with error bars. Library entry points:

    from sfn_merge_plugin.localize import MapConfig, run_map, merge_table_in_memory
"""

from sfn_merge_plugin.localize.plan import MapConfig  # noqa: F401


def run_map(config):
    """Run a localization map (see ``run.run_map``)."""
    from sfn_merge_plugin.localize.run import run_map as _run

    return _run(config)


def merge_table_in_memory(*args, **kwargs):
    """Table 1 rows (one module kind swapped across all layers) via the engine (see ``run.merge_table_in_memory``)."""
    from sfn_merge_plugin.localize.run import merge_table_in_memory as _table

    return _table(*args, **kwargs)
