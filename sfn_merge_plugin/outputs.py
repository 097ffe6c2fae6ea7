"""Output files and folders, one way: checked before heavy work, written atomically, never foreign.

Rules every SfN writer follows (and the only code that implements them):
- ``check_output_folder`` runs before any heavy work: the path is not a file nor under one, its nearest
  existing folder is writable (probed with a real file), and an existing non-empty folder was written
  by SfN (it holds ``MARKER`` or a merge's provenance file), else ``--force`` is needed.
- ``claim_folder`` makes the folder SfN's (writes ``MARKER``), so later files in it may be replaced.
- ``atomic_write`` writes a temporary name in the same folder and renames it; a failure (disk full
  included) removes the temporary file and raises ``OutputError`` naming the path.
- ``staged_folder`` builds a whole output folder under a temporary name and swaps it in at the end;
  temporary folders left by a killed run (its pid no longer alive) are removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path

from sfn_merge_plugin.errors import OutputError

MARKER = ".sfn-output"  # a small JSON file in every folder SfN creates: which tool wrote it
OWNED_BY = (MARKER, "sfn_provenance.json")  # files that show SfN wrote a folder
TMP_TAG = ".sfn-tmp-"  # temporary names: ".<final name>.sfn-tmp-<pid>[-n]"


def _tmp_name(path: Path, n: int = 0) -> Path:
    return path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}" + (f"-{n}" if n else ""))


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _explain(exc: OSError, path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{path}: the disk is full; free some space or choose another output path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: not writable ({exc.strerror}); choose an output path you can write to"
    return f"{path}: cannot write it ({exc.strerror or exc}); choose another output path"


def is_sfn_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in OWNED_BY)


def check_output_folder(path, force: bool = False, what: str = "output folder",
                        force_hint: str = "or pass --force to write into it anyway") -> Path:
    """Raise ``OutputError`` unless ``path`` can become (or already is) an SfN output folder.
    ``force_hint`` ends the message for a foreign non-empty folder (how this tool overrides the check)."""
    p = Path(os.path.expanduser(str(path)))
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {path} exists and is a file; choose a folder path")
    base = _nearest_existing(p.parent if not p.exists() else p)
    if not base.is_dir():
        raise OutputError(f"{what} {path} is under {base}, which is a file; choose a folder path")
    if p.is_dir() and any(p.iterdir()) and not is_sfn_folder(p) and not force:
        raise OutputError(
            f"{what} {path} is not empty and was not written by SfN; choose a new path, empty it, " + force_hint
        )
    probe = base / f".sfn-write-probe{TMP_TAG}{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise OutputError(_explain(exc, path)) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return p


def claim_folder(path, tool: str, force: bool = False) -> Path:
    """Check, create and mark ``path`` as written by SfN's ``tool``; returns it."""
    p = check_output_folder(path, force=force)
    try:
        p.mkdir(parents=True, exist_ok=True)
        if not (p / MARKER).exists():
            atomic_write(p / MARKER, json.dumps({"written_by": f"sfn {tool}"}) + "\n")
    except OSError as exc:
        raise OutputError(_explain(exc, path)) from None
    return p


def atomic_write(path, data) -> Path:
    """Write ``data`` (str or bytes) to ``path`` through a temporary name in the same folder."""
    path = Path(path)
    with staged_file(path) as tmp:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


def atomic_write_json(path, doc, indent: int | None = 1) -> Path:
    """JSON with ``allow_nan=False``: a non-finite number is a bug to report, never a file to write."""
    return atomic_write(path, json.dumps(doc, indent=indent, allow_nan=False) + "\n")


@contextlib.contextmanager
def staged_file(path):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, else removed."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(_explain(exc, path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(final) -> list:
    """Remove temporary siblings of ``final`` left by runs that died (their pid is gone)."""
    final = Path(final)
    removed = []
    prefix = f".{final.name}{TMP_TAG}"
    if not final.parent.is_dir():
        return removed
    for p in final.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        pid = p.name[len(prefix):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(str(p))
    return removed


@contextlib.contextmanager
def staged_folder(out, tool: str, force: bool = False, check: bool = True):
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` (marked as SfN's)."""
    out = Path(os.path.expanduser(str(out)))
    if check:
        check_output_folder(out, force=force)
    clean_stale_temps(out)
    tmp = _tmp_name(out)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        atomic_write(tmp / MARKER, json.dumps({"written_by": f"sfn {tool}"}) + "\n")
        replace_folder(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(_explain(exc, out)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(tmp, out) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an earlier SfN output there."""
    tmp, out = Path(tmp), Path(out)
    if out.exists():
        old = _tmp_name(out, 1)
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, out)
    os.chmod(out, 0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
