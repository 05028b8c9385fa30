"""Tests of the compile API: argument checking, spec errors, the on-disk cache,
spec forms, input layouts and dtypes, and the C-level error path."""

import ctypes
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

import moe_mlir
import moe_mlir.compiler as compiler_mod
from moe_mlir import reference as R
from moe_mlir.spec import load_spec

from compile_helpers import (check_forward, compiled, make_weights, make_x, moe_spec, pk_spec,
                             precompile, requires_compiler)

pytestmark = requires_compiler

SPEC = moe_spec("api_moe", d_model=12, experts=5, expert_hidden=6, activation="swiglu",
                router={"top_k": 2, "selection_bias": True},
                shared_experts={"hidden": 4, "gate": True},
                capacity={"factor": 1.0, "overflow": "next_choice"},
                aux_losses=["load_balance", "z_loss"])
NOISY = moe_spec("api_noisy", d_model=8, experts=4, router={"top_k": 2, "noise": True})
BF16 = moe_spec("api_bf16", d_model=8, experts=4, weight_dtype="bf16",
                router={"selection_bias": True}, shared_experts={"hidden": 3})
F16 = moe_spec("api_f16", d_model=8, experts=4, weight_dtype="f16")
PKM = pk_spec("pkm", "api_pkm", query_batchnorm=True)
MH = {"name": "api_mh", "kind": "mh_moe", "d_model": 8, "heads": 2, "experts": 3,
      "expert_hidden": 4, "activation": "gelu", "router": {"top_k": 1}}


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    precompile([SPEC, NOISY, BF16, F16, PKM, MH])


@pytest.fixture
def layer():
    return compiled(SPEC)


@pytest.fixture
def inputs():
    s = load_spec(SPEC)
    return make_x(9, 12, 1), make_weights(s, 2)


# --------------------------------------------------------------------------- #
# x
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("bad", [
    pytest.param(lambda x: x.astype(np.float64), id="float64"),
    pytest.param(lambda x: x.astype(np.float16), id="float16"),
    pytest.param(lambda x: x.astype(np.int32), id="int32"),
    pytest.param(lambda x: x[:, :-1], id="short_d_model"),
    pytest.param(lambda x: np.concatenate([x, x], axis=1), id="long_d_model"),
    pytest.param(lambda x: x[0], id="rank1"),
    pytest.param(lambda x: x[None], id="rank3"),
    pytest.param(lambda x: x[:0], id="T0"),
    pytest.param(lambda x: x.tolist(), id="list"),
    pytest.param(lambda x: np.float32(1.0), id="scalar"),
])
def test_bad_x(layer, inputs, bad):
    x, W = inputs
    with pytest.raises(ValueError, match=r"\bx\b"):
        layer.forward(bad(x), **W)
    with pytest.raises(ValueError, match=r"\bx\b"):
        layer(bad(x), **W)


# --------------------------------------------------------------------------- #
# Weights
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name", ["gate", "gate_bias", "w1", "w3", "w2", "shared_w1",
                                  "shared_w3", "shared_w2", "shared_gate"])
def test_missing_weight(layer, inputs, name):
    x, W = inputs
    del W[name]
    with pytest.raises(ValueError, match=f"'{name}'"):
        layer.forward(x, **W)


@pytest.mark.parametrize("name", ["w_noise", "bn_mean", "gate2"])
def test_unknown_weight(layer, inputs, name):
    x, W = inputs
    W[name] = np.zeros((5, 12), np.float32)
    with pytest.raises(ValueError, match=f"'{name}'"):
        layer.forward(x, **W)


@pytest.mark.parametrize("name", ["gate", "gate_bias", "w1", "w2", "shared_gate"])
@pytest.mark.parametrize("how", ["transposed", "extra_dim", "dropped_dim", "short"])
def test_wrong_weight_shape(layer, inputs, name, how):
    x, W = inputs
    a = W[name]
    W[name] = {"transposed": lambda: np.ascontiguousarray(a.T) if a.ndim > 1
               and a.shape != a.T.shape else a[..., :-1],
               "extra_dim": lambda: a[None],
               "dropped_dim": lambda: a[0],
               "short": lambda: a[:-1] if a.shape[0] > 1 else a[..., :-1]}[how]()
    with pytest.raises(ValueError, match=f"'{name}'"):
        layer.forward(x, **W)


@pytest.mark.parametrize("spec,name,dtype", [
    (SPEC, "gate", np.float64),
    (SPEC, "w1", np.float16),
    (SPEC, "gate_bias", np.float64),
    (SPEC, "w2", np.int32),
    (SPEC, "w3", np.uint16),          # raw bits are for bf16 weights only
    (BF16, "w1", np.float64),
    (BF16, "gate", np.int16),
    (BF16, "gate_bias", np.uint16),   # gate_bias is always f32
    (F16, "w2", np.float64),
    (F16, "gate", np.uint16),
    (PKM, "bn_var", np.float16),
    (PKM, "keys1", np.float64),
])
def test_wrong_weight_dtype(spec, name, dtype):
    s = load_spec(spec)
    W = make_weights(s, 3)
    W[name] = W[name].astype(dtype)
    with pytest.raises(ValueError, match=f"'{name}'"):
        compiled(s).forward(make_x(3, s["d_model"]), **W)


def test_weight_not_an_array(layer, inputs):
    x, W = inputs
    W["w2"] = W["w2"].tolist()
    with pytest.raises(ValueError, match="'w2'"):
        layer.forward(x, **W)


# --------------------------------------------------------------------------- #
# Seed
# --------------------------------------------------------------------------- #

def test_noisy_layer_needs_seed():
    s = load_spec(NOISY)
    W = make_weights(s, 4)
    x = make_x(5, 8)
    layer = compiled(s)
    with pytest.raises(ValueError, match="seed"):
        layer.forward(x, **W)
    with pytest.raises(ValueError, match="seed"):
        layer(x, **W)
    for bad in (1.5, "3", True, None):
        with pytest.raises(ValueError, match="seed"):
            layer.forward(x, seed=bad, **W)
    check_forward(s, x, W, seed=np.uint64(2 ** 63))   # numpy integers are fine


def test_seed_refused_without_noise(layer, inputs):
    x, W = inputs
    for seed in (0, 123, np.int64(-5)):
        with pytest.raises(ValueError, match="has no noisy router and takes no seed"):
            layer.forward(x, seed=seed, **W)
    layer.forward(x, seed=None, **W)


# --------------------------------------------------------------------------- #
# Results and the convenience methods
# --------------------------------------------------------------------------- #

def test_result_types(layer, inputs):
    x, W = inputs
    got = layer.forward(x, **W)
    assert list(got) == ["out", "topk_ids", "topk_weights", "expert_counts", "dropped",
                         "load_balance", "z_loss"]
    assert got["out"].dtype == np.float32 and got["out"].shape == (9, 12)
    assert got["topk_ids"].dtype == np.int32 and got["topk_ids"].shape == (9, 2)
    assert got["topk_weights"].dtype == np.float32
    assert got["expert_counts"].dtype == np.int32 and got["expert_counts"].shape == (5,)
    assert type(got["dropped"]) is int
    assert type(got["load_balance"]) is float and type(got["z_loss"]) is float
    np.testing.assert_array_equal(layer(x, **W), got["out"])
    ids, w = layer.route(x, **W)
    np.testing.assert_array_equal(ids, got["topk_ids"])
    np.testing.assert_array_equal(w, got["topk_weights"])
    assert layer.aux_losses(x, **W) == {"load_balance": got["load_balance"],
                                        "z_loss": got["z_loss"]}
    ref_ids, ref_w = R.route(SPEC, x, gate=W["gate"], gate_bias=W["gate_bias"])
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-5)
    ref_aux = R.aux_losses(SPEC, x, gate=W["gate"], gate_bias=W["gate_bias"])
    for k, v in ref_aux.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-5)


def test_mh_moe_result_shapes():
    s = load_spec(MH)
    W = make_weights(s, 5)
    got = check_forward(s, make_x(7, 8), W)
    assert got["topk_ids"].shape == (14, 1)


def test_layer_properties(layer):
    assert layer.d_model == 12
    assert layer.spec == load_spec(SPEC)
    assert list(layer.weight_shapes) == list(moe_mlir.weight_shapes(SPEC))
    assert layer.output_names[0] == "out"
    assert "api_moe" in repr(layer)


# --------------------------------------------------------------------------- #
# Invalid specs
# --------------------------------------------------------------------------- #

BAD_SPECS = [
    ({"router": {"top_k": 9}}, r"router\.top_k"),
    ({"router": {"top_k": 2, "score": "tanh"}}, r"router\.score"),
    ({"router": {"top_k": 2, "groups": 4}}, r"router\.groups"),
    ({"router": {"top_k": 2, "scaling": 0}}, r"router\.scaling"),
    ({"router": {"top_k": 2, "temperature": 1.0}}, r"router\.temperature"),
    ({"d_model": 8.0}, r"d_model"),
    ({"d_model": 0}, r"d_model"),
    ({"experts": True}, r"experts"),
    ({"activation": "swish"}, r"activation"),
    ({"weight_dtype": "f64"}, r"weight_dtype"),
    ({"capacity": {"overflow": "drop"}}, r"capacity\.factor"),
    ({"capacity": {"factor": -1.0}}, r"capacity\.factor"),
    ({"capacity": {"factor": 1.0, "priority": "random"}}, r"capacity\.priority"),
    ({"aux_losses": ["z_loss", "z_loss"]}, r"aux_losses\[1\]"),
    ({"aux_losses": ["entropy"]}, r"aux_losses\[0\]"),
    ({"shared_experts": {"gate": True}}, r"shared_experts\.gate"),
    ({"heads": 2}, r"heads"),
    ({"name": "my-layer"}, r"name"),
    ({"expert_hidden": None}, r"expert_hidden"),
]


def bad_spec(patch):
    s = moe_spec("bad", d_model=8, experts=6, expert_hidden=4)
    for key, value in patch.items():
        if value is None:
            del s[key]
        else:
            s[key] = value
    return s


@pytest.mark.parametrize("form", ["dict", "yaml_text", "json_text", "path"])
@pytest.mark.parametrize("patch,field", BAD_SPECS, ids=[f for _, f in BAD_SPECS])
def test_invalid_spec(tmp_path, monkeypatch, form, patch, field):
    monkeypatch.setenv("MOE_MLIR_CACHE", str(tmp_path / "cache"))
    s = bad_spec(patch)
    if form == "dict":
        arg = s
    elif form == "yaml_text":
        arg = yaml.safe_dump(s, sort_keys=False)
    elif form == "json_text":
        arg = json.dumps(s)
    else:
        arg = tmp_path / "bad.yaml"
        arg.write_text(yaml.safe_dump(s, sort_keys=False))
    with pytest.raises(ValueError, match=field) as info:
        moe_mlir.compile(arg)
    if form == "path":
        assert str(arg) in str(info.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_invalid_peer_spec():
    with pytest.raises(ValueError, match="experts"):
        moe_mlir.compile(pk_spec("peer", "bad_peer", n=3) | {"experts": 10})
    with pytest.raises(ValueError, match="key_dim"):
        moe_mlir.compile(pk_spec("pkm", "bad_pkm", key_dim=5))
    with pytest.raises(ValueError, match="top_k"):
        moe_mlir.compile(pk_spec("pkm", "bad_pkm", n=3, top_k=10))
    with pytest.raises(ValueError, match="activation"):
        moe_mlir.compile(pk_spec("peer", "bad_peer", activation="swiglu"))


def test_missing_spec_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        moe_mlir.compile(str(tmp_path / "nope.yaml"))


def test_spec_rejected_only_by_the_front_end(tmp_path, monkeypatch):
    """A C-keyword name is rejected by the Python loader; a YAML 1.1 boolean
    passes it but not moe-compile, whose located diagnostic comes back as a
    ValueError (SpecError) naming the field."""
    monkeypatch.setenv("MOE_MLIR_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="field 'name' must not be a C keyword"):
        moe_mlir.compile(moe_spec("int", d_model=8))
    # PyYAML reads the YAML 1.1 boolean `yes` as true; moe-compile does not.
    text = yaml.safe_dump(moe_spec("yes_bool", d_model=8)).replace(
        "top_k: 2", "top_k: 2\n  normalize: yes")
    assert load_spec(text)["router"]["normalize"] is True
    with pytest.raises(moe_mlir.SpecError, match=r":\d+:\d+: error: .*router.normalize"):
        moe_mlir.compile(text)


def test_bad_compile_options():
    with pytest.raises(ValueError, match="target"):
        moe_mlir.compile(SPEC, target="gpu")
    with pytest.raises(ValueError, match="opt_level"):
        moe_mlir.compile(SPEC, opt_level=4)


# --------------------------------------------------------------------------- #
# The on-disk cache
# --------------------------------------------------------------------------- #

CACHE_SPEC = moe_spec("api_cache", d_model=8, experts=3, router={"top_k": 1})


def test_cache_reuses_library(tmp_path, monkeypatch):
    monkeypatch.setenv("MOE_MLIR_CACHE", str(tmp_path))
    first = moe_mlir.compile(CACHE_SPEC)
    lib = first.library_path
    assert tmp_path in lib.parents
    mtime = lib.stat().st_mtime_ns

    def no_compiler(*args, **kwargs):
        raise AssertionError(f"moe-compile ran although the spec is cached: {args}")

    monkeypatch.setattr(compiler_mod.subprocess, "run", no_compiler)
    # The same spec, written differently (defaults spelled out, text form).
    spelled = load_spec(CACHE_SPEC)
    for again in (CACHE_SPEC, spelled, yaml.safe_dump(spelled), json.dumps(CACHE_SPEC)):
        layer = moe_mlir.compile(again)
        assert layer.library_path == lib
        assert lib.stat().st_mtime_ns == mtime
    s = load_spec(CACHE_SPEC)
    W = make_weights(s, 1)
    x = make_x(5, 8)
    np.testing.assert_array_equal(layer(x, **W), first(x, **W))


def test_cache_disabled_recompiles(tmp_path, monkeypatch):
    monkeypatch.setenv("MOE_MLIR_CACHE", str(tmp_path))
    calls = []
    real_run = subprocess.run

    def counting_run(*args, **kwargs):
        calls.append(args[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(compiler_mod.subprocess, "run", counting_run)
    moe_mlir.compile(CACHE_SPEC)
    assert len(calls) >= 1
    n = len(calls)
    moe_mlir.compile(CACHE_SPEC)
    assert len(calls) == n
    moe_mlir.compile(CACHE_SPEC, cache=False)
    assert len(calls) > n


def test_cache_keys_on_spec_and_options(tmp_path, monkeypatch):
    monkeypatch.setenv("MOE_MLIR_CACHE", str(tmp_path))
    a = moe_mlir.compile(CACHE_SPEC)
    other = dict(CACHE_SPEC, router={"top_k": 2})
    b = moe_mlir.compile(other)
    c = moe_mlir.compile(CACHE_SPEC, opt_level=1)
    assert len({a.library_path, b.library_path, c.library_path}) == 3
    s = load_spec(CACHE_SPEC)
    W = make_weights(s, 2)
    x = make_x(17, 8, 3)
    check = R.forward(s, x, **W)
    for layer in (a, c):
        got = layer.forward(x, **W)
        np.testing.assert_array_equal(got["topk_ids"], check["topk_ids"])
        np.testing.assert_allclose(got["out"], check["out"], rtol=1e-5, atol=1e-5)


def test_cache_dir_default(monkeypatch):
    monkeypatch.delenv("MOE_MLIR_CACHE", raising=False)
    assert str(compiler_mod.cache_dir()).endswith(os.path.join(".cache", "moe_mlir"))


# --------------------------------------------------------------------------- #
# Spec forms, layouts, dtypes
# --------------------------------------------------------------------------- #

def test_spec_forms_give_the_same_results(tmp_path):
    s = load_spec(SPEC)
    yaml_text = yaml.safe_dump(SPEC, sort_keys=False)
    path = tmp_path / "api_moe.yaml"
    path.write_text(yaml_text)
    json_path = tmp_path / "api_moe.json"
    json_path.write_text(json.dumps(SPEC))
    W = make_weights(s, 6)
    x = make_x(17, 12, 7)
    results = []
    for form in (SPEC, yaml_text, json.dumps(SPEC), str(path), path, json_path):
        layer = moe_mlir.compile(form)
        assert layer.spec == s
        results.append(layer.forward(x, **W))
    for other in results[1:]:
        for key in results[0]:
            np.testing.assert_array_equal(other[key], results[0][key], err_msg=key)


def test_non_contiguous_inputs(layer, inputs):
    x, W = inputs
    want = layer.forward(x, **W)
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), np.float32)
    wide[:, ::2] = x
    xs = wide[:, ::2]                                  # strided view
    assert not xs.flags.c_contiguous
    Wn = {}
    for name, a in W.items():
        if a.ndim >= 2 and min(a.shape) > 1:
            Wn[name] = np.asfortranarray(a)            # column-major copy
        else:
            b = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), np.float32)
            b[..., ::2] = a
            Wn[name] = b[..., ::2]                     # strided view
        assert not Wn[name].flags.c_contiguous, name
    got = layer.forward(xs, **Wn)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    rev = np.ascontiguousarray(x[::-1])[::-1]          # negative strides
    got = layer.forward(rev, **W)
    np.testing.assert_array_equal(got["out"], want["out"])


def test_bf16_bits_equal_float32_values():
    s = load_spec(BF16)
    layer = compiled(s)
    W = make_weights(s, 8)
    x = make_x(17, 8, 9)
    as_f32 = check_forward(s, x, W)
    bits = {}
    for name, a in W.items():
        if name == "gate_bias":
            bits[name] = a
        else:
            r = moe_mlir.round_to_dtype(a, "bf16")
            bits[name] = (r.view(np.uint32) >> 16).astype(np.uint16)
    as_bits = layer.forward(x, **bits)
    for key in as_f32:
        np.testing.assert_array_equal(as_bits[key], as_f32[key], err_msg=key)
    # the reference reads uint16 as raw bits too
    ref = R.forward(s, x, **bits)
    np.testing.assert_allclose(as_bits["out"], ref["out"], rtol=1e-5, atol=1e-5)


def test_f16_given_as_float16_equals_float32():
    s = load_spec(F16)
    layer = compiled(s)
    W = make_weights(s, 10)
    x = make_x(17, 8, 11)
    a = check_forward(s, x, W)
    b = layer.forward(x, **{n: v.astype(np.float16) for n, v in W.items()})
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_inputs_not_modified(layer, inputs):
    x, W = inputs
    x0 = x.copy()
    W0 = {n: a.copy() for n, a in W.items()}
    layer.forward(x, **W)
    np.testing.assert_array_equal(x, x0)
    for n in W:
        np.testing.assert_array_equal(W[n], W0[n])


# --------------------------------------------------------------------------- #
# The C entry point
# --------------------------------------------------------------------------- #

class CEntry:
    """Direct ctypes access to ``<name>_forward`` of a compiled layer."""

    def __init__(self, layer):
        self.layer = layer
        self.lib = ctypes.CDLL(str(layer.library_path))
        abi = layer._abi
        self.abi = abi
        self.fn = getattr(self.lib, abi["entry_point"])
        self.fn.restype = ctypes.c_int32
        self.fn.argtypes = ([ctypes.c_int64, ctypes.c_int64]
                            + [ctypes.c_void_p] * len(abi["inputs"])
                            + ([ctypes.c_uint64] if abi["seed"] else [])
                            + [ctypes.c_void_p] * len(abi["outputs"]))
        self.lib.moe_last_error.restype = ctypes.c_char_p

    def buffers(self, x, W):
        ins = [x] + [W[b["name"]] for b in self.abi["inputs"][1:]]
        outs = []
        T = x.shape[0]
        for b in self.abi["outputs"]:
            shape = [T * b["rows_per_token"] if d < 0 else d for d in b["shape"]]
            outs.append(np.full(shape, -7, dtype=np.float32 if b["dtype"] == "f32"
                                else np.int32))
        return ins, outs

    def call(self, tokens, d_model, ins, outs, null_in=None, null_out=()):
        ptr = [None if i == null_in else a.ctypes.data for i, a in enumerate(ins)]
        optr = [None if i in null_out else a.ctypes.data for i, a in enumerate(outs)]
        return self.fn(tokens, d_model, *ptr, *optr)

    def error(self):
        return self.lib.moe_last_error().decode()


def test_c_entry_null_pointer(layer, inputs):
    x, W = inputs
    c = CEntry(layer)
    ins, outs = c.buffers(x, W)
    assert c.call(9, 12, ins, outs) == 0
    names = [b["name"] for b in c.abi["inputs"]]
    for i in (0, names.index("w2"), len(ins) - 1):
        status = c.call(9, 12, ins, outs, null_in=i)
        assert status == 1
        msg = c.error()
        assert f"'{names[i]}'" in msg and "NULL" in msg, msg
        assert msg.startswith("api_moe_forward")
    status = c.call(9, 12, ins, outs, null_out=(0,))
    assert status == 1 and "'out'" in c.error()


def test_c_entry_bad_sizes(layer, inputs):
    x, W = inputs
    c = CEntry(layer)
    ins, outs = c.buffers(x, W)
    assert c.call(9, 11, ins, outs) == 2
    assert "d_model must be 12" in c.error()
    assert c.call(9, 13, ins, outs) == 2
    assert c.call(0, 12, ins, outs) == 2
    assert "tokens" in c.error()
    assert c.call(-3, 12, ins, outs) == 2
    assert (outs[0] == -7).all(), "a failed call must not write outputs"


def test_c_entry_optional_outputs_may_be_null(layer, inputs):
    """Only `out` is required: NULL for every other output still computes out."""
    x, W = inputs
    c = CEntry(layer)
    ins, outs = c.buffers(x, W)
    assert c.call(9, 12, ins, outs, null_out=tuple(range(1, len(outs)))) == 0
    np.testing.assert_array_equal(outs[0], layer(x, **W))


@requires_compiler
def test_bind_converts_once_and_matches_forward():
    spec = moe_spec("bind_bf16", weight_dtype="bf16")
    layer = compiled(spec)
    W = make_weights(spec)
    x = make_x(9, spec["d_model"])
    bound = layer.bind(**W)
    want = layer.forward(x, **W)
    got = bound.forward(x)
    for key, value in want.items():
        assert np.array_equal(np.asarray(got[key]), np.asarray(value)), key
    assert np.array_equal(bound(x), want["out"])
    ids, _ = bound.route(x)
    assert np.array_equal(ids, want["topk_ids"])
    # The bf16 bits were made once: the bound arrays are uint16.
    assert all(a.dtype == np.uint16 for a in bound._args)
    with pytest.raises(ValueError, match="missing weight"):
        layer.bind(**{k: v for k, v in W.items() if k != "w2"})


def test_compiler_remarks_become_warnings(tmp_path):
    """A layer moe-compile builds but remarks on (a scratch buffer it cannot
    size up front, which would abort on out-of-memory) warns with the
    remark; the suite turns the warning into an error (conftest.py)."""
    import warnings as _warnings

    from moe_mlir.compiler import CompilerWarning, _run

    source = tmp_path / "layer.yaml"
    source.write_text("name: l\n")
    script = "echo 'layer.yaml:3:5: remark: scratch size unknown' >&2; echo out"
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        assert _run(Path("/bin/sh"), ["-c", script], source) == "out\n"
    assert [type(w.message) for w in caught] == [CompilerWarning]
    assert "layer.yaml:3:5: remark: scratch size unknown" in str(caught[0].message)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        _run(Path("/bin/sh"), ["-c", "echo quiet"], source)
    assert not caught
