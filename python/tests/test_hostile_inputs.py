"""Hostile inputs: specs nested too deeply or with sizes a compiled layer
cannot address, token counts past a layer's max_tokens, wrong seeds, and the
documented handling of non-contiguous and read-only arrays.  Every one is a
ValueError, never a RecursionError, a MemoryError or a crash."""

import ctypes
import json
import subprocess

import numpy as np
import pytest
import yaml

import moe_mlir
from moe_mlir.compiler import find_compiler
from moe_mlir.spec import load_spec

from compile_helpers import (HAVE_COMPILER, compiled, make_weights, make_x, moe_spec,
                             precompile, requires_compiler)

INT32_MAX = 2**31 - 1

# 2 choices plus 2 next-choice fallbacks: 4 dispatch slots per token.
ROUTED = moe_spec("hostile_moe", d_model=12, experts=5, expert_hidden=6,
                  router={"top_k": 2}, capacity={"factor": 1.0, "overflow": "next_choice"})
NOISY = moe_spec("hostile_noisy", d_model=8, experts=4, router={"top_k": 2, "noise": True})


@pytest.fixture(scope="module")
def routed():
    if not HAVE_COMPILER:
        pytest.skip("moe-compile not built")
    precompile([ROUTED, NOISY])
    return compiled(ROUTED)


# --------------------------------------------------------------------------- #
# Nesting depth
# --------------------------------------------------------------------------- #

DEPTH = 26000   # the 52 KB spec


def _nested_dict(depth):
    d = {}
    for _ in range(depth):
        d = {"a": d}
    return d


@pytest.mark.parametrize("form", ["yaml_list", "yaml_flow_map", "json_list", "json_object"])
def test_deeply_nested_text_is_a_value_error(form):
    if form in ("yaml_list", "json_list"):
        text = "[" * DEPTH + "]" * DEPTH
    elif form == "yaml_flow_map":
        text = "{a: " * DEPTH + "1" + "}" * DEPTH
    else:
        text = '{"a": ' * DEPTH + "1" + "}" * DEPTH
    with pytest.raises(ValueError, match="nested too deeply"):
        load_spec(text)


def test_deeply_nested_file_is_a_value_error(tmp_path):
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"deep{suffix}"
        path.write_text("[" * DEPTH + "]" * DEPTH)
        with pytest.raises(ValueError, match=f"{path}: .*nested too deeply"):
            load_spec(path)
        with pytest.raises(ValueError, match="nested too deeply"):
            load_spec(str(path))


def test_deeply_nested_dict_is_a_value_error():
    spec = moe_spec("deep", d_model=8)
    spec["router"]["extra"] = _nested_dict(DEPTH)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_spec(spec)


@requires_compiler
def test_compile_of_a_deep_spec_is_a_value_error():
    with pytest.raises(ValueError, match="nested too deeply"):
        moe_mlir.compile("[" * DEPTH + "]" * DEPTH)


# --------------------------------------------------------------------------- #
# Sizes a compiled layer cannot address
# --------------------------------------------------------------------------- #

def _moe(**kw):
    s = {"name": "big", "kind": "moe", "d_model": 8, "experts": 4, "expert_hidden": 4,
         "weight_dtype": "bf16", "router": {"top_k": 1}}
    s.update(kw)
    return s


# (spec, the field the error names, what the message says)
TOO_BIG = {
    "size_past_int32": (_moe(experts=3_000_000_000), "experts", "<= 2147483647"),
    "w1_2^49_bytes": (_moe(d_model=65536, experts=65536, expert_hidden=65536, router={"top_k": 2}),
                      "experts", "weight 'w1'"),
    "head_proj_past_int64": ({"name": "big", "kind": "mh_moe", "d_model": 2147483640, "heads": 8,
                              "experts": 2, "expert_hidden": 1, "router": {"top_k": 1}},
                             "d_model", "weight 'head_proj'"),
    "dispatch_slots": ({"name": "big", "kind": "mh_moe", "d_model": 4, "heads": 4,
                        "experts": 2**30, "expert_hidden": 1, "weight_dtype": "bf16",
                        "router": {"top_k": 2**30}},
                       "router.top_k", "dispatch slots per token"),
    "expert_rows": (_moe(d_model=1, experts=INT32_MAX, expert_hidden=32768, activation="gelu",
                         router={"top_k": INT32_MAX}),
                    "router.top_k", "one token's expert rows"),
    "pk_queries": ({"name": "big", "kind": "peer", "d_model": 1, "experts": 4,
                    "heads": 2**30, "top_k": 1, "key_dim": 65536, "weight_dtype": "bf16"},
                   "heads", "one token's queries"),
    "pk_candidates": ({"name": "big", "kind": "pkm", "d_model": 1, "experts": 2**30,
                       "heads": 65536, "top_k": 32768, "key_dim": 2, "weight_dtype": "bf16"},
                      "heads", "product-key candidates"),
}


@pytest.mark.parametrize("case", list(TOO_BIG))
def test_sizes_that_cannot_be_addressed(case):
    spec, field, what = TOO_BIG[case]
    with pytest.raises(ValueError, match=f"field '{field}'.*{what}"):
        load_spec(spec)
    with pytest.raises(ValueError, match=f"field '{field}'"):
        load_spec(yaml.safe_dump(spec))


@requires_compiler
@pytest.mark.parametrize("case", list(TOO_BIG))
def test_compiler_refuses_the_same_sizes_at_the_same_field(case, tmp_path):
    """The Python loader mirrors moe-compile: both refuse, at the same field."""
    spec, field, _ = TOO_BIG[case]
    path = tmp_path / "big.yaml"
    text = yaml.safe_dump(spec, sort_keys=False)
    path.write_text(text)
    proc = subprocess.run([str(find_compiler()), "--emit=mlir", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    lines = text.splitlines()
    key = field.split(".")[-1]
    line = next(i for i, t in enumerate(lines, 1) if t.strip().startswith(key + ":"))
    assert f"{path}:{line}:" in proc.stderr and "error: expected" in proc.stderr, proc.stderr


@requires_compiler
def test_largest_sizes_that_fit_compile_to_mlir(tmp_path):
    spec = _moe(d_model=32, experts=INT32_MAX, expert_hidden=1024, activation="gelu")
    assert load_spec(spec)["experts"] == INT32_MAX
    path = tmp_path / "edge.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run([str(find_compiler()), "--emit=abi", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # One token's logits are 4 (2^31 - 1) bytes: 2^47 of them make 16384 tokens.
    assert json.loads(proc.stdout)["layers"][0]["max_tokens"] == 16384


# --------------------------------------------------------------------------- #
# Tokens past max_tokens
# --------------------------------------------------------------------------- #

def test_max_tokens_follows_the_dispatch_slots(routed):
    assert routed.max_tokens == INT32_MAX // 4
    mh = {"name": "hostile_mh", "kind": "mh_moe", "d_model": 8, "heads": 2, "experts": 3,
          "expert_hidden": 4, "activation": "gelu", "router": {"top_k": 1}}
    assert compiled(mh).max_tokens == INT32_MAX // 2


@pytest.mark.parametrize("tokens", [INT32_MAX // 4 + 1, 2**40, 2**56])
def test_huge_x_view_is_a_value_error(routed, tokens):
    """A broadcast view of a tiny array is a few bytes; it is refused before
    anything copies it or allocates outputs of its size."""
    W = make_weights(load_spec(ROUTED), 1)
    x = np.broadcast_to(np.zeros((1, 12), np.float32), (tokens, 12))
    for call in (lambda: routed(x, **W), lambda: routed.forward(x, **W),
                 lambda: routed.route(x, **W), lambda: routed.bind(**W)(x),
                 lambda: routed.bind(**W).route(x)):
        with pytest.raises(ValueError, match=f"x has {tokens} tokens; layer 'hostile_moe' "
                                             f"takes at most {INT32_MAX // 4}"):
            call()


def test_c_entry_refuses_tokens_it_cannot_index(routed):
    """tokens = 2^62 with buffers for 3 tokens: MOE_ERROR_BAD_SIZE, outputs
    untouched (the kernel never runs)."""
    lib = ctypes.CDLL(str(routed.library_path))
    abi = routed._abi
    fn = getattr(lib, abi["entry_point"])
    fn.restype = ctypes.c_int32
    fn.argtypes = ([ctypes.c_int64, ctypes.c_int64] + [ctypes.c_void_p] * len(abi["inputs"])
                   + [ctypes.c_void_p] * len(abi["outputs"]))
    lib.moe_last_error.restype = ctypes.c_char_p
    W = make_weights(load_spec(ROUTED), 1)
    x = make_x(3, 12)
    ins = [x] + [W[b["name"]] for b in abi["inputs"][1:]]
    out = np.full((3, 12), -7, np.float32)
    for tokens in (INT32_MAX // 4 + 1, 2**62, 2**63 - 1):
        status = fn(tokens, 12, *[a.ctypes.data for a in ins], out.ctypes.data,
                    *[None] * (len(abi["outputs"]) - 1))
        assert status == 2
        assert lib.moe_last_error().decode() == (
            f"hostile_moe_forward: tokens must be <= {INT32_MAX // 4} for this layer "
            "(its tokens x 4 dispatch slots are counted in 32 bits)")
        assert (out == -7).all()
    assert fn(3, 12, *[a.ctypes.data for a in ins], out.ctypes.data,
              *[None] * (len(abi["outputs"]) - 1)) == 0


# --------------------------------------------------------------------------- #
# Seeds
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("bad", [0, 123, np.int64(-5), np.uint64(2**63), 1.5, "3", True,
                                 b"3", [1], 2.0])
def test_seed_is_a_value_error_without_noise(routed, bad):
    """A layer without a noisy router takes no seed: any seed but None is a
    mistake (the wrong layer or spec), refused by every call."""
    W = make_weights(load_spec(ROUTED), 1)
    x = make_x(4, 12)
    for call in (lambda: routed(x, seed=bad, **W), lambda: routed.forward(x, seed=bad, **W),
                 lambda: routed.route(x, seed=bad, **W), lambda: routed.bind(**W)(x, seed=bad)):
        with pytest.raises(ValueError, match="has no noisy router and takes no seed"):
            call()


def test_seed_none_runs_without_noise(routed):
    W = make_weights(load_spec(ROUTED), 1)
    x = make_x(4, 12)
    want = routed.forward(x, **W)
    got = routed.forward(x, seed=None, **W)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_noisy_layer_refuses_wrong_seeds(routed):
    layer = compiled(NOISY)
    W = make_weights(load_spec(NOISY), 2)
    x = make_x(4, 8)
    for bad in (None, 1.5, "3", True):
        with pytest.raises(ValueError, match="seed"):
            layer.route(x, seed=bad, **W)


# --------------------------------------------------------------------------- #
# Layouts: non-contiguous inputs are copied, read-only ones read in place
# --------------------------------------------------------------------------- #

def test_read_only_inputs_are_accepted(routed):
    W = make_weights(load_spec(ROUTED), 3)
    x = make_x(6, 12)
    want = routed.forward(x, **W)
    xr = x.copy()
    xr.setflags(write=False)
    Wr = {}
    for name, a in W.items():
        Wr[name] = a.copy()
        Wr[name].setflags(write=False)
    for got in (routed.forward(xr, **Wr), routed.bind(**Wr).forward(xr)):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    # Outputs are new, writable arrays.
    got = routed.forward(xr, **Wr)
    assert got["out"].flags.writeable and got["out"] is not xr


def test_broadcast_x_within_limits_is_copied(routed):
    """A broadcast (zero-stride) view that fits is copied, not misread."""
    W = make_weights(load_spec(ROUTED), 3)
    row = make_x(1, 12)
    x = np.broadcast_to(row, (5, 12))
    got = routed.forward(x, **W)
    want = routed.forward(np.repeat(row, 5, axis=0), **W)
    np.testing.assert_array_equal(got["out"], want["out"])


@pytest.mark.parametrize("bad", [
    pytest.param(lambda x: x.tolist(), id="list"),
    pytest.param(lambda x: x.astype(">f4"), id="big-endian"),
    pytest.param(lambda x: x[None], id="3-d"),
    pytest.param(lambda x: x[:0], id="no-tokens"),
    pytest.param(lambda x: np.ma.masked_array(x).astype(np.float64), id="masked-float64"),
])
def test_other_bad_x_are_value_errors(routed, bad):
    W = make_weights(load_spec(ROUTED), 1)
    with pytest.raises(ValueError, match="x must"):
        routed(bad(make_x(4, 12)), **W)


# --------------------------------------------------------------------------- #
# Compile options
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("option,value", [
    ("opt_level", True), ("opt_level", 2.0), ("opt_level", "3"),
    ("mcpu", None), ("mcpu", 3), ("mattr", ["+avx2"]), ("tiles", 32),
    ("pipeline", None), ("target", b"cpu"),
])
def test_bad_compile_options_are_value_errors(option, value):
    """Checked before anything is compiled (no compiler needed)."""
    with pytest.raises(ValueError, match=option):
        moe_mlir.compile(ROUTED, **{option: value})
