"""One error family: every problem SfN reports to a user in one line is an ``SfnError``.

The ``sfn`` CLI catches ``SfnError`` once and prints ``sfn COMMAND: error: <message>`` (exit 2, no
traceback); the mergekit hook raises it as a click error (``Error: <message>``) and the TRL / lm-eval
hooks let it reach their own one-line handlers. Library code raises these and never imports the CLI.
A message names the input, what is wrong with it and what to do instead.

Each class also derives from ``ValueError`` so callers written against the older ``ValueError``
subclasses keep working.
"""

from __future__ import annotations


class SfnError(ValueError):
    """An input or environment problem to report in one line; the message says the fix."""


class UsageError(SfnError):
    """A command-line value or option that cannot be used as given."""


UserError = UsageError  # the name the sfn commands used before errors.py


class CheckpointError(SfnError):
    """A path or hub id that is not a usable model; the message says what was found and what to do."""


class SelectorError(SfnError):
    """A module or layer selector that is malformed or matches nothing."""


class TaxonomyError(SfnError):
    """A model whose architecture or tensor names SfN cannot map."""


class OutputError(SfnError):
    """An output path that cannot be written safely (a file, not writable, not SfN's, disk full)."""


class DataError(SfnError):
    """A dataset file or row that cannot be used (missing column, bad value, unreadable file)."""
