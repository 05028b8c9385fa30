"""Tests of the thread controls: set_num_threads / get_num_threads, their
argument checks and default, and that compiled layers give bit-identical
results whatever the thread count (items of a parallel loop are independent,
so the count changes who computes an item, never how)."""

import os
import threading
import weakref

import numpy as np
import pytest

import moe_mlir
import moe_mlir.compiler as compiler_mod
from moe_mlir.spec import load_spec

from compile_helpers import (compiled, make_weights, make_x, mh_spec, moe_spec, precompile,
                             requires_compiler)

SPECS = [
    moe_spec("threads_moe", d_model=16, experts=6, expert_hidden=8,
             shared_experts={"hidden": 4}, aux_losses=["load_balance", "z_loss"]),
    mh_spec("threads_mh", d_model=16, heads=2, experts=4, expert_hidden=8),
]
# Compiled only after a thread count is set: a library loaded later gets it.
LATE = moe_spec("threads_late", d_model=8, experts=4, expert_hidden=4)


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.fixture(autouse=True)
def _default_threads():
    """Every test starts and ends on the default setting."""
    moe_mlir.set_num_threads(0)
    yield
    moe_mlir.set_num_threads(0)


@pytest.fixture
def no_layers(monkeypatch):
    """As if no layer library were loaded yet."""
    monkeypatch.setattr(compiler_mod, "_thread_libraries", weakref.WeakSet())


# --------------------------------------------------------------------------- #
# Settings
# --------------------------------------------------------------------------- #

def test_exported():
    assert moe_mlir.set_num_threads is compiler_mod.set_num_threads
    assert moe_mlir.get_num_threads is compiler_mod.get_num_threads
    assert {"set_num_threads", "get_num_threads"} <= set(moe_mlir.__all__)


def test_set_and_get(no_layers, monkeypatch):
    monkeypatch.delenv("MOE_NUM_THREADS", raising=False)
    assert moe_mlir.set_num_threads(3) == 3
    assert moe_mlir.get_num_threads() == 3
    assert moe_mlir.set_num_threads(np.int64(5)) == 5
    assert moe_mlir.get_num_threads() == 5
    assert moe_mlir.set_num_threads(0) == _affinity()
    assert moe_mlir.get_num_threads() == _affinity()


@pytest.mark.parametrize("value, expected", [
    (None, "affinity"), ("3", 3), (" 7 ", 7), ("+2", 2),
    ("0", "affinity"), ("-2", "affinity"), ("junk", "affinity"), ("4x", "affinity"),
    ("", "affinity"), ("1.5", "affinity"), (str(2**31), "affinity"),
])
def test_default_follows_the_runtime(no_layers, monkeypatch, value, expected):
    """With no layer loaded the default is computed as the runtime does:
    $MOE_NUM_THREADS when it is a positive int32, else the affinity mask."""
    if value is None:
        monkeypatch.delenv("MOE_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("MOE_NUM_THREADS", value)
    want = _affinity() if expected == "affinity" else expected
    assert moe_mlir.get_num_threads() == want
    assert moe_mlir.set_num_threads(0) == want


@pytest.mark.parametrize("bad", [-1, -100, 1.0, 2.5, "2", None, True, False, 2**31, [2]],
                         ids=repr)
def test_bad_values(bad):
    moe_mlir.set_num_threads(2)
    with pytest.raises(ValueError, match="number of threads must be an int >= 0"):
        moe_mlir.set_num_threads(bad)
    assert moe_mlir.get_num_threads() == 2, "a rejected value changed the setting"


# --------------------------------------------------------------------------- #
# Compiled layers
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def layers():
    precompile(SPECS)
    return [compiled(s) for s in SPECS]


def _runtime_threads(layer) -> int:
    return layer._lib.moe_get_num_threads()


@requires_compiler
def test_layers_follow_the_setting(layers):
    for n in (1, 2, 5):
        assert moe_mlir.set_num_threads(n) == n
        assert [_runtime_threads(layer) for layer in layers] == [n] * len(layers)
    default = moe_mlir.set_num_threads(0)
    assert default == compiler_mod._default_num_threads()
    assert [_runtime_threads(layer) for layer in layers] == [default] * len(layers)


@requires_compiler
def test_a_layer_loaded_later_gets_the_setting(layers):
    moe_mlir.set_num_threads(3)
    late = moe_mlir.compile(LATE)
    assert _runtime_threads(late) == 3
    assert moe_mlir.get_num_threads() == 3
    moe_mlir.set_num_threads(0)
    assert _runtime_threads(late) == compiler_mod._default_num_threads()


def _forward_all(layer, T=67):
    spec = load_spec(layer.spec)
    return layer.forward(make_x(T, spec["d_model"], 3), **make_weights(spec, 4))


def _assert_identical(a, b, what):
    assert set(a) == set(b)
    for name in a:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), \
            f"{what}: output {name!r} differs"


@requires_compiler
@pytest.mark.parametrize("index", range(len(SPECS)), ids=[s["name"] for s in SPECS])
def test_same_output_on_1_and_2_threads(layers, index):
    layer = layers[index]
    moe_mlir.set_num_threads(1)
    one = _forward_all(layer)
    moe_mlir.set_num_threads(2)
    two = _forward_all(layer)
    _assert_identical(one, two, f"{layer.name} on 1 vs 2 threads")
    moe_mlir.set_num_threads(8)
    _assert_identical(one, _forward_all(layer), f"{layer.name} on 1 vs 8 threads")


@requires_compiler
def test_concurrent_calls_from_python_threads(layers):
    """ctypes drops the GIL: both threads run the kernel at once, one of them
    on the pool and the other inline, and both get the 1-thread result."""
    layer = layers[0]
    moe_mlir.set_num_threads(1)
    want = _forward_all(layer)
    moe_mlir.set_num_threads(2)
    results, errors = [], []

    def run():
        try:
            for _ in range(20):
                results.append(_forward_all(layer))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 40
    for got in results:
        _assert_identical(want, got, "concurrent call")
