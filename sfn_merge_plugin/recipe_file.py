"""Read a mergekit recipe file the way SfN answers for it: strictly, with one-line errors.

Used by ``mergekit-yaml`` (through the hook) and ``sfn plan``. SfN's own recipes (``sfn_swap``,
``sfn_destroy``, a misspelling of them, or a one-model ``passthrough`` + ``slices`` removal) are refused
on a duplicate key, a misspelt top-level key or a non-ASCII look-alike; other recipes get a warning for
those, and keep mergekit's behaviour otherwise. Any recipe gets one line for a missing, empty or
malformed file, an unknown method, or a field of the wrong type.
"""

from __future__ import annotations

import sys

import yaml

from sfn_merge_plugin.errors import SfnError, UsageError


def _warn(message: str) -> None:
    sys.stderr.write(f"[sfn] warning: {message}\n")


def load_recipe(path) -> tuple:
    """(MergeConfiguration, the file's text) of the recipe at ``path``; raises ``SfnError`` in one line."""
    from pydantic import ValidationError
    from mergekit.config import MergeConfiguration

    from sfn_merge_plugin import strict_yaml
    from sfn_merge_plugin.planning import RecipeError, check_recipe_data, is_sfn_recipe

    source = f"recipe {path}"
    text = strict_yaml.read_text(path, "recipe")
    try:
        data = strict_yaml.loads(text, source)
    except UsageError as exc:
        if "appears twice" not in str(exc):
            raise
        data = yaml.safe_load(text)
        if is_sfn_recipe(data):
            raise
        _warn(f"{exc} (mergekit keeps the last value)")
    if is_sfn_recipe(data):
        check_recipe_data(data, source)
    else:
        try:
            check_recipe_data(data, source)
        except RecipeError as exc:
            if "unknown merge_method" in str(exc):
                raise
            _warn(str(exc))
    try:
        config = MergeConfiguration.model_validate(data)
    except ValidationError as exc:
        from sfn_merge_plugin.planning import validation_message

        raise RecipeError(validation_message(exc, source)) from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SfnError):
            raise
        raise RecipeError(f"{source} is not a valid mergekit recipe: {exc}") from None
    return config, text
