"""Helpers for the bad-input tests: run an ``sfn`` command in-process and check its one-line error."""

import os
import re

from sfn_merge_plugin.cli import main


def run_sfn(argv, capsys):
    """(exit code, stderr lines, stdout) of ``sfn ARGV`` run in this process."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        rc = exc.code
    captured = capsys.readouterr()
    return rc, [ln for ln in captured.err.splitlines() if ln.strip()], captured.out


def assert_one_line(rc, lines, *needles, code=2):
    """Exit ``code``, exactly one stderr line, no traceback, and every needle (regex) in that line."""
    assert rc == code, (rc, lines)
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for needle in needles:
        assert re.search(needle, lines[0]), (needle, lines[0])
    return lines[0]


def listing(folder):
    """Every path under ``folder`` (relative), to compare what is on disk before and after."""
    out = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(root, name), folder))
    return out


def no_temps(folder):
    return not [p for p in listing(folder) if "sfn-tmp" in p]
