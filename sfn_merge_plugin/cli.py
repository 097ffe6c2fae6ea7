"""The ``sfn`` command: what mergekit, TRL and lm-eval lack (delta statistics, sweeps, the lab...).

Each subcommand lives in its own module, imported only when it runs, so ``sfn --help`` is instant.
A command module defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sfn_merge_plugin.errors import SfnError

# name -> (module, one-line help)
COMMANDS = {
    "lab": ("sfn_merge_plugin.lab.command", "run the paper's four stethoscopes end to end and write a report"),
    "delta": ("sfn_merge_plugin.delta.command", "per-layer, per-module weight change between a base and fine-tune(s)"),
    "delta-plot": ("sfn_merge_plugin.delta.plot_command", "redraw the delta figures from a delta/ folder"),
    "plan": ("sfn_merge_plugin.commands.plan", "dry-run a merge recipe: the tensors it selects, per layer"),
    "remove-recipe": ("sfn_merge_plugin.commands.remove_recipe", "write a mergekit recipe that removes layers"),
    "destroy-sweep": ("sfn_merge_plugin.sweep.command", "Zero/ReInit/Remove modules and grade what the model still says"),
    "localize": ("sfn_merge_plugin.localize.command", "map which modules carry an ability: sufficiency and necessity per layer window"),
    "pack": ("sfn_merge_plugin.packs.command", "module packs: extract, inspect, apply, compress to LoRA"),
    "grade-levels": ("sfn_merge_plugin.sweep.grade_command", "grade responses into the paper's Levels I-IV without regenerating"),
    "data": ("sfn_merge_plugin.freeze.data_command", "prepare training data (s1K or any local file) in TRL's format; decontaminate it against the eval sets"),
    "eval-path": ("sfn_merge_plugin.evaluation.path_command", "print the folder of SfN's lm-eval tasks (for --include_path)"),
    "tiny-pair": ("sfn_merge_plugin.commands.tiny_pair", "build a tiny random base/fine-tune pair locally (demos, tests)"),
}

EPILOG = """examples:
  sfn lab -o lab/                                   # the whole method, offline, on a CPU
  sfn delta BASE TUNED -o delta/                    # Delta Stethoscope
  mergekit-yaml recipes/oproj_swap.yml out/         # Merge Stethoscope (through mergekit)
  sfn plan recipes/oproj_swap.yml                   # what a recipe selects, without loading weights
  sfn destroy-sweep MODEL --modules o_proj,mlp --methods zero,reinit,remove --layers 5-30 -o sweep/
Run `sfn COMMAND --help` for each command's options."""


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sfn",
        description="SfN, Stethoscope for Networks: which modules of a transformer LLM carry an ability.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from sfn_merge_plugin import __version__

    p.add_argument("--version", action="version", version=f"sfn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


class _OneLineParser(argparse.ArgumentParser):
    """A bad option value is one line (``sfn CMD: error: ...; see sfn CMD --help``), not usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _top_parser()
        if not argv:
            parser.print_help()
            return 2
        parser.parse_args(argv)  # --help / --version / unknown command: argparse explains and exits
        return 2
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"sfn {name}: not available in this installation ({module_name} is missing)", file=sys.stderr)
            return 2
        print(f"sfn {name}: needs the package {exc.name!r}; install SfN's extras, e.g. pip install 'sfn-merge-plugin[train,eval]'",
              file=sys.stderr)
        return 2
    parser = _OneLineParser(
        prog=f"sfn {name}",
        description=(module.__doc__ or help_text).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:  # --help (0) or a bad option value, already explained in one line (2)
        return int(exc.code or 0)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"sfn {name}: interrupted", file=sys.stderr)
        return 130
    except SfnError as exc:
        print(f"sfn {name}: error: {exc}", file=sys.stderr)
        return 2


from sfn_merge_plugin.errors import UserError  # noqa: E402,F401  (older name, kept for callers)


if __name__ == "__main__":
    sys.exit(main())
