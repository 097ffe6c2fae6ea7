"""The plugin must not change its hosts: the host tests that SfN's hook touches pass with the hook on.

They come from the PyPI source distributions (the wheels ship no tests), fetched once by CI with

    pip download --no-binary :all: --no-deps mergekit==0.1.5 lm-eval==0.4.13 -d "$SFN_HOST_SDISTS"

and unpacked here into a temporary folder. Without them (no SFN_HOST_SDISTS folder holding both archives)
the tests skip, saying so. Only the few relevant host tests run (about 25 s per host, marked slow):
- mergekit: every registered method (sfn_swap and sfn_destroy included) through the in-memory
  ``merge_state_dicts`` API, with strided inputs;
- lm-eval: ``TaskManager(include_defaults=False, include_path=...)`` lists only the caller's tasks.
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SDISTS = Path(os.environ.get("SFN_HOST_SDISTS", "/tmp/sfn_hosts"))
HOSTS = {  # sdist archive -> (host tests to run, pytest -k filter)
    "mergekit-0.1.5.tar.gz": ("tests/test_merge_method_regressions.py", "strided_weights_without_mutation"),
    "lm_eval-0.4.13.tar.gz": ("tests/test_task_manager.py", "include_defaults_false_with_custom_path"),
}
pytestmark = pytest.mark.skipif(os.environ.get("SFN_DISABLE_HOOKS", "").strip() not in ("", "0"),
                                reason="SFN_DISABLE_HOOKS is set: these tests check the hook")


def _unpack(archive: str, into: Path) -> Path:
    path = SDISTS / archive
    if not path.is_file():
        pytest.skip(f"{path} not found: fetch the host sdists with `pip download --no-binary :all: --no-deps "
                    f"mergekit==0.1.5 lm-eval==0.4.13 -d {SDISTS}` (or set SFN_HOST_SDISTS)")
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into / archive.removesuffix(".tar.gz")


@pytest.mark.slow  # ~25 s each on 2 shared cores: a fresh interpreter importing mergekit / lm-eval, then the tests
@pytest.mark.parametrize("archive", list(HOSTS))
def test_host_tests_pass_with_the_hook_on(archive, tmp_path):
    tests, keyword = HOSTS[archive]
    root = _unpack(archive, tmp_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", SFN_DISABLE_HOOKS="0")
    env.pop("PYTEST_ADDOPTS", None)
    # -P: import the installed host package (the one SfN's hook patches), not the unpacked source copy
    done = subprocess.run([sys.executable, "-P", "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(root), tests, "-k", keyword],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    tail = "\n".join(out.splitlines()[-15:])
    assert done.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail, tail
    if "mergekit" in archive:  # the SfN methods were among those run
        assert "[sfn_swap] PASSED" in out and "[sfn_destroy] PASSED" in out, tail
