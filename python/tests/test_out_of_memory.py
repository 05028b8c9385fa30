"""Running out of scratch memory: MemoryError with the runtime's message, and
nothing half-done.

Each entry point takes all of its scratch memory in one allocation before any
work (moe-allocate-scratch-up-front); the runtime's scratch limit
(``moe_set_scratch_limit``, called here through ctypes on the layer's own copy
of the runtime) makes that allocation fail as if memory had run out.  The
layer raises ``MemoryError``, and the next call without a limit returns the
same bits as before.
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

import moe_mlir
from compile_helpers import (compiled, make_weights, make_x, mh_spec, moe_spec, pk_spec,
                             precompile, requires_compiler)

pytestmark = requires_compiler

SPECS = {
    "moe": moe_spec("oom_moe", aux_losses=["load_balance"]),
    "mh_moe": mh_spec("oom_mh"),
    "pkm": pk_spec("pkm", name="oom_pkm"),
}


@pytest.fixture(scope="module", autouse=True)
def _precompile():
    precompile(SPECS.values())


class ScratchLimit:
    """Sets the scratch limit of one layer library; lifts it on exit."""

    def __init__(self, layer: moe_mlir.Layer, limit: int):
        self.fn = layer._lib.moe_set_scratch_limit
        self.fn.argtypes = [ctypes.c_int64]
        self.fn.restype = ctypes.c_int64
        self.limit = limit

    def __enter__(self):
        self.fn(self.limit)
        return self

    def __exit__(self, *exc):
        self.fn(-1)


def _message(entry_point: str) -> str:
    return (rf"^{entry_point}: out of memory allocating (\d+) bytes of scratch memory "
            r"\(over the limit of 0 bytes set by moe_set_scratch_limit\)$")


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_forward_raises_memory_error(kind):
    spec = SPECS[kind]
    layer = compiled(spec)
    W = make_weights(spec)
    x = make_x(37, spec["d_model"])
    before = layer.forward(x, **W)
    with ScratchLimit(layer, 0):
        with pytest.raises(MemoryError, match=_message(f"{spec['name']}_forward")) as info:
            layer.forward(x, **W)
    needed = int(re.search(r"allocating (\d+) bytes", str(info.value)).group(1))
    # More tokens, more scratch: the size is computed from the call's tokens.
    with ScratchLimit(layer, 0):
        with pytest.raises(MemoryError) as more:
            layer.forward(make_x(200, spec["d_model"]), **W)
    assert int(re.search(r"allocating (\d+) bytes", str(more.value)).group(1)) > needed
    # One allocation of exactly that size is all the call takes.
    with ScratchLimit(layer, needed):
        _same(layer.forward(x, **W), before)
    _same(layer.forward(x, **W), before)


def test_bound_and_route_raise_memory_error():
    spec = SPECS["moe"]
    layer = compiled(spec)
    W = make_weights(spec)
    x = make_x(16, spec["d_model"])
    bound = layer.bind(**W)
    before = bound.forward(x)
    ids, weights = bound.route(x)
    entry = f"{spec['name']}_forward_packed" if layer.packs_weights else f"{spec['name']}_forward"
    with ScratchLimit(layer, 0):
        with pytest.raises(MemoryError, match=_message(entry)):
            bound(x)
        with pytest.raises(MemoryError, match=_message(f"{spec['name']}_route")):
            layer.route(x, **W)
    _same(bound.forward(x), before)
    got_ids, got_weights = bound.route(x)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_weights, weights)


def test_reference_pipeline_raises_memory_error():
    spec = moe_spec("oom_ref")
    layer = moe_mlir.compile(spec, pipeline="reference")
    W = make_weights(spec)
    x = make_x(5, spec["d_model"])
    before = layer.forward(x, **W)
    with ScratchLimit(layer, 0):
        with pytest.raises(MemoryError, match=_message("oom_ref_forward")):
            layer.forward(x, **W)
    _same(layer.forward(x, **W), before)


def test_other_failures_stay_runtime_errors():
    """Only MOE_ERROR_OUT_OF_MEMORY maps to MemoryError."""
    layer = compiled(SPECS["moe"])
    with pytest.raises(RuntimeError, match="failed \\(2\\)") as info:
        layer._check_status("oom_moe_forward", 2)
    assert not isinstance(info.value, MemoryError)
