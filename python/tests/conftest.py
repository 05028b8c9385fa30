"""Make `moe_mlir` importable from the source tree without installing it, and
give the end-to-end tests (test_compile_*.py) their own compile cache."""
import os
import sys

import pytest


def pytest_configure(config):
    # A layer whose scratch moe-compile cannot size up front would abort on
    # out-of-memory: every layer the suite compiles must have none.
    config.addinivalue_line("filterwarnings", "error::moe_mlir.compiler.CompilerWarning")

_PY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _PY not in sys.path:
    sys.path.insert(0, _PY)


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(tmp_path_factory):
    """Compiled layers go to a fresh per-session directory, so the suite neither
    depends on nor fills the user's ~/.cache/moe_mlir.  Set MOE_MLIR_TEST_CACHE
    to a directory to keep them across runs instead (the cache key includes the
    compiler build, so a rebuilt moe-compile never reuses stale libraries)."""
    keep = os.environ.get("MOE_MLIR_TEST_CACHE")
    if keep:
        path = keep
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest -n N: the workers of one run share a cache (its entries are
        # written by atomic renames), so a layer is compiled once per run.
        shared = tmp_path_factory.getbasetemp().parent / "moe_mlir_cache"
        shared.mkdir(exist_ok=True)
        path = str(shared)
    else:
        path = str(tmp_path_factory.mktemp("moe_mlir_cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOE_MLIR_CACHE", path)
        yield path
