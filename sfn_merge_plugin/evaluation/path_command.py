"""Print the folder of SfN's lm-eval task YAMLs: the official way to use them is

    lm_eval --include_path "$(sfn eval-path)" --tasks sfn_aime24 --model sfn-hf --model_args pretrained=MODEL

(after `pip install`, SfN's start-up hook already adds this folder, so --include_path is optional).
Tasks: sfn_aime24, sfn_math500, sfn_gpqa_diamond (chat prompts; add --apply_chat_template) and their
*_gen variants (plain "generate" prompts, as in the paper's merge evaluations); groups sfn_reasoning and
sfn_reasoning_gen.
"""

from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("--list", action="store_true", help="also list the task and group names found there")


def task_names(folder) -> list[str]:
    """Task and group names declared by the YAML files of ``folder``."""
    import re
    from pathlib import Path

    names = []
    for path in sorted(Path(folder).glob("*.yaml")):
        match = re.search(r"^(?:task|group):\s*(\S+)", path.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            names.append(match.group(1))
    return names


def run(args) -> int:
    from sfn_merge_plugin.errors import UserError
    from sfn_merge_plugin.evaluation.lm_eval_hook import task_dir

    try:
        folder = task_dir()
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    print(folder)
    if args.list:
        for name in task_names(folder):
            print(name)
    return 0
