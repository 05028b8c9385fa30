"""moe_mlir.torch: the ``moe_mlir::layer_forward`` / ``layer_route`` custom ops
and ``MoELayer``, against :class:`moe_mlir.Layer` on the same weights.

The op runs the same kernel as ``Layer.bind(**weights)``, so every output
must be the same bits (f32, and bf16/f16 weights given as 16-bit tensors
against the same bits given to Layer); the NumPy reference checks the layer
itself to 1e-5 (float64 reference vs f32 kernel, as the other end-to-end
tests).  torch.compile(fullgraph=True) runs the same op: the same bits as
eager.  Skipped without torch or without a built moe-compile.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="moe_mlir.torch needs PyTorch (pip install torch)")

import moe_mlir  # noqa: E402
from moe_mlir import reference as R  # noqa: E402
from compile_helpers import (assert_close, assert_same_bits, assert_same_routing,  # noqa: E402
                             compiled, make_weights, make_x, mh_spec, moe_spec, pk_spec,
                             precompile, requires_compiler)

mt = pytest.importorskip("moe_mlir.torch")

pytestmark = requires_compiler

SPECS = {
    # Mixtral-like: top-k of the logits, then softmax of those, bf16 weights.
    "mixtral_bf16": moe_spec("to_mixtral", d_model=24, experts=6, expert_hidden=12,
                             weight_dtype="bf16", router={"top_k": 2, "order": "topk_then_score"}),
    # Qwen-like: gated shared expert, aux losses, noisy router (seeded), f32.
    "shared_noisy": moe_spec("to_shared", d_model=16, experts=4, expert_hidden=9,
                             router={"top_k": 2, "noise": True, "normalize": True},
                             shared_experts={"hidden": 10, "gate": True},
                             aux_losses=["load_balance", "z_loss"]),
    "mh_moe_f16": mh_spec("to_mh", d_model=16, heads=2, experts=4, expert_hidden=8,
                          weight_dtype="f16"),
    "pkm": pk_spec("pkm", name="to_pkm", d_model=16, n=4, heads=2, top_k=3, key_dim=8,
                   query_batchnorm=True),
    "peer_bf16": pk_spec("peer", name="to_peer", d_model=16, n=4, heads=2, top_k=2,
                         key_dim=6, weight_dtype="bf16"),
}
KINDS = list(SPECS)
SEED = {"shared_noisy": 1234}  # noisy routers need one


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    precompile(SPECS.values())


def _layer(kind):
    return compiled(SPECS[kind])


def _tensors(weights):
    return {name: torch.from_numpy(a.copy()) for name, a in weights.items()}


def _module(kind, weights=None):
    weights = make_weights(SPECS[kind]) if weights is None else weights
    return mt.MoELayer(_layer(kind), _tensors(weights))


def _expected(kind, x, weights=None):
    """Layer.bind on the NumPy weights: what the op must reproduce."""
    weights = make_weights(SPECS[kind]) if weights is None else weights
    return _layer(kind).bind(**weights).forward(x, seed=SEED.get(kind))


def _assert_outputs(got, want, what):
    assert list(got) == list(want), what
    for name, value in want.items():
        g = got[name]
        assert isinstance(g, torch.Tensor), f"{what}: {name} is not a tensor"
        assert_same_bits(g.numpy(), np.asarray(value, dtype=g.numpy().dtype), f"{what}: {name}")


# --------------------------------------------------------------------------- #
# Same bits as Layer
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("kind", KINDS)
def test_forward_all_same_bits_as_layer(kind):
    """f32 x, f32 weight tensors (rounded once to the spec's dtype as Layer
    rounds them): every output the same bits as Layer.bind's, and the layer
    within 1e-5 of the NumPy reference."""
    m = _module(kind)
    x = make_x(7, m.layer.d_model)
    with torch.no_grad():
        got = m.forward_all(torch.from_numpy(x), seed=SEED.get(kind))
    want = _expected(kind, x)
    _assert_outputs(got, want, kind)
    assert got["out"].dtype == torch.float32 and tuple(got["out"].shape) == x.shape
    W = {n: R.round_to_dtype(a, m.spec["weight_dtype"]) if m.layer.weight_shapes[n][1] != "f32"
         else a for n, a in make_weights(SPECS[kind]).items()}
    if SPECS[kind].get("router", {}).get("noise"):
        return  # the reference draws the noise from the kernel's generator: test_compile_api
    ref = R.forward(m.spec, x, **W)
    assert_same_routing({k: v.numpy() for k, v in got.items()}, ref)
    assert_close(got["out"].numpy(), ref["out"], f"{kind} out vs reference")


@pytest.mark.parametrize("kind", KINDS)
def test_route_same_bits_as_layer(kind):
    m = _module(kind)
    x = make_x(5, m.layer.d_model, seed=3)
    ids, w = m.route(torch.from_numpy(x), seed=SEED.get(kind))
    rids, rw = _layer(kind).route(x, seed=SEED.get(kind), **make_weights(SPECS[kind]))
    assert ids.dtype == torch.int32 and w.dtype == torch.float32
    assert_same_bits(ids.numpy(), rids, f"{kind} topk_ids")
    assert_same_bits(w.numpy(), rw, f"{kind} topk_weights")


@pytest.mark.parametrize("kind", ["mixtral_bf16", "peer_bf16", "mh_moe_f16"])
def test_16_bit_weight_tensors_taken_as_they_are(kind):
    """bf16/f16 weight tensors reach the kernel as their bits (shared with
    the caller's tensors, not copied): the same output as Layer given those
    bits (uint16 for bf16, float16 for f16)."""
    layer = _layer(kind)
    wd = layer.spec["weight_dtype"]
    tdtype = torch.bfloat16 if wd == "bf16" else torch.float16
    W = make_weights(SPECS[kind])
    given = {n: torch.from_numpy(a).to(tdtype) if layer.weight_shapes[n][1] == wd
             else torch.from_numpy(a) for n, a in W.items()}
    m = mt.MoELayer(layer, given)
    for name, t in given.items():
        assert getattr(m, name).data_ptr() == t.data_ptr(), f"{name} was copied"
    as_layer = {n: (t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy())
                for n, t in given.items()}
    x = make_x(6, layer.d_model, seed=5)
    with torch.no_grad():
        got = m.forward_all(torch.from_numpy(x))
    _assert_outputs(got, layer.bind(**as_layer).forward(x), kind)
    # The 16-bit tensors are torch's own rounding of the f32 weights: the
    # same round-to-nearest-even as Layer's, so f32 input gives the same bits.
    assert_same_bits(got["out"].numpy(), _module(kind)(torch.from_numpy(x)).numpy(), kind)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_activations(dtype):
    """x in bf16/f16: the kernel runs on x converted to f32, the output is
    converted back to x's dtype."""
    m = _module("mixtral_bf16")
    x = torch.from_numpy(make_x(5, 24, seed=7)).to(dtype)
    y = m(x)
    assert y.dtype == dtype and y.shape == x.shape
    want = _expected("mixtral_bf16", x.float().numpy())["out"]
    assert torch.equal(y, torch.from_numpy(want).to(dtype))


def test_leading_dims_and_single_token():
    m = _module("shared_noisy")
    seed = SEED["shared_noisy"]
    x = make_x(6, 16, seed=9)
    want = _expected("shared_noisy", x)["out"]
    y = m(torch.from_numpy(x).reshape(2, 3, 16), seed=seed)
    assert y.shape == (2, 3, 16)
    assert_same_bits(y.reshape(6, 16).numpy(), want, "leading dims")
    # T = 1, with and without a leading dim.  A token's output is the same
    # alone as in a batch (the kernels' exactness contract).
    one = m(torch.from_numpy(x[2]), seed=seed)
    assert one.shape == (16,)
    alone = _expected("shared_noisy", x[2:3])["out"]
    assert_same_bits(one.numpy(), alone[0], "T = 1")
    assert_same_bits(m(torch.from_numpy(x[2:3]), seed=seed).numpy(), alone, "T = 1, [1, D]")


def test_non_contiguous_x():
    m = _module("pkm")
    base = torch.from_numpy(make_x(5, 32, seed=11))
    x = base[:, ::2]  # strided columns
    assert not x.is_contiguous()
    before = base.clone()
    want = _expected("pkm", np.ascontiguousarray(x.numpy()))["out"]
    assert_same_bits(m(x).numpy(), want, "strided x")
    xt = torch.from_numpy(make_x(16, 4, seed=12)).t()  # a transpose
    want = _expected("pkm", np.ascontiguousarray(xt.numpy()))["out"]
    assert_same_bits(m(xt).numpy(), want, "transposed x")
    assert torch.equal(base, before), "x was written"


# --------------------------------------------------------------------------- #
# Zero-copy, bound once
# --------------------------------------------------------------------------- #

def _entry(m):
    return mt._entry(m._handle)


def test_weights_shared_not_copied_and_bound_once():
    """f32 weights of an f32 layer: the module's buffers are the caller's
    tensors, the bound layer's arrays are views of the buffers (the
    unpacked ones: the router gate; all of them for pkm), and calls reuse
    the one binding."""
    for kind in ("pkm", "shared_noisy"):
        given = _tensors(make_weights(SPECS[kind]))
        m = mt.MoELayer(_layer(kind), given)
        kept = _entry(m).bound._by_name
        for name, t in given.items():
            assert getattr(m, name).data_ptr() == t.data_ptr(), f"{kind}: {name} was copied"
        shared = [n for n in given if n in kept and kept[n].ctypes.data == given[n].data_ptr()]
        assert "gate" in shared or kind != "shared_noisy"
        if kind == "pkm":  # no packed weights: every one is read in place
            assert shared == list(given)
        x = torch.from_numpy(make_x(3, 16))
        for _ in range(3):
            m(x, seed=SEED.get(kind))
        assert _entry(m).binds == 1, f"{kind}: weights bound again on a call"


@pytest.mark.parametrize("kind", ["pkm", "shared_noisy"])
def test_in_place_weight_change_is_seen(kind):
    """An in-place change bumps the tensor's version: the next call binds
    again (packed layers re-pack), once, and gives the new weights' result."""
    m = _module(kind)
    x = make_x(4, 16, seed=13)
    seed = SEED.get(kind)
    m(torch.from_numpy(x), seed=seed)
    name = "values" if kind == "pkm" else "w1"
    with torch.no_grad():
        getattr(m, name).mul_(-0.5)
    W = make_weights(SPECS[kind])
    W[name] = W[name] * np.float32(-0.5)
    want = _layer(kind).bind(**W)(x, seed=seed)
    assert_same_bits(m(torch.from_numpy(x), seed=seed).numpy(), want, "after mul_")
    assert_same_bits(m(torch.from_numpy(x), seed=seed).numpy(), want, "again")
    assert _entry(m).binds == 2


def test_load_state_dict_and_dtype_casts():
    """state_dict holds the spec's weights by name; loading other weights
    re-binds; .to(dtype) leaves the weights' dtype (the spec's) alone."""
    m = _module("mixtral_bf16")
    sd = m.state_dict()
    assert list(sd) == list(m.layer.weight_shapes)
    assert all(v.dtype == torch.bfloat16 for v in sd.values())
    W2 = make_weights(SPECS["mixtral_bf16"], seed=4)
    m2 = _module("mixtral_bf16", W2)
    m.load_state_dict(m2.state_dict())
    x = make_x(5, 24, seed=14)
    want = _expected("mixtral_bf16", x, W2)["out"]
    assert_same_bits(m(torch.from_numpy(x)).numpy(), want, "after load_state_dict")
    m.to(torch.float16)
    assert all(b.dtype == torch.bfloat16 for b in m.buffers())
    assert_same_bits(m(torch.from_numpy(x)).numpy(), want, "after .to(float16)")


# --------------------------------------------------------------------------- #
# torch.compile, meta tensors
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("kind", ["shared_noisy", "mh_moe_f16", "peer_bf16"])
def test_torch_compile_fullgraph_same_bits(kind):
    torch._dynamo.reset()
    m = _module(kind)
    seed = SEED.get(kind)
    fn = torch.compile(lambda x: m.forward_all(x, seed=seed), fullgraph=True)
    for T in (1, 5, 9):
        x = torch.from_numpy(make_x(T, 16, seed=T))
        got, eager = fn(x), m.forward_all(x, seed=seed)
        for name in eager:
            assert_same_bits(got[name].numpy(), eager[name].numpy(), f"{kind} T={T} {name}")
    route = torch.compile(lambda x: m.route(x, seed=seed), fullgraph=True)
    x = torch.from_numpy(make_x(3, 16))
    for got, eager in zip(route(x), m.route(x, seed=seed)):
        assert torch.equal(got, eager)
    # Dynamic T: one graph, the fake kernel's shapes symbolic in T.
    dyn = torch.compile(lambda x: m(x, seed=seed), fullgraph=True, dynamic=True)
    for T in (2, 7):
        x = torch.from_numpy(make_x(T, 16, seed=T + 20))
        assert torch.equal(dyn(x), m(x, seed=seed)), f"dynamic T={T}"
    # bf16 activations through the compiled module, leading dims.
    cm = torch.compile(m, fullgraph=True)
    xb = torch.from_numpy(make_x(6, 16, seed=2)).to(torch.bfloat16).reshape(2, 3, 16)
    assert torch.equal(cm(xb, seed=seed), m(xb, seed=seed))
    if seed is not None:  # seeds that change between calls, past int64
        for s in (1, 2, -5, 2**63 + 1):
            assert torch.equal(cm(xb, seed=s), m(xb, seed=s)), f"seed {s}"
    assert _entry(m).binds == 1


@pytest.mark.parametrize("kind", KINDS)
def test_meta_tensors_give_shapes(kind):
    """The fake kernel: meta x and weights give every output's shape and dtype
    (those of a real call) without running anything."""
    m = _module(kind)
    seed = SEED.get(kind)
    real = m.forward_all(torch.from_numpy(make_x(3, m.layer.d_model)), seed=seed)
    meta = [w.to("meta") for w in m._weights()]
    outs = torch.ops.moe_mlir.layer_forward(torch.empty(3, m.layer.d_model, device="meta"),
                                            meta, m._handle, seed)
    assert [(o.device.type, o.shape, o.dtype) for o in outs] == \
        [("meta", r.shape, r.dtype) for r in real.values()]
    ids, w = torch.ops.moe_mlir.layer_route(torch.empty(3, m.layer.d_model, device="meta"),
                                            meta, m._handle, seed)
    assert (ids.shape, ids.dtype, w.shape) == (real["topk_ids"].shape, torch.int32,
                                               real["topk_weights"].shape)
    m.to("meta")  # the whole module on meta
    y = m(torch.empty(2, 3, m.layer.d_model, device="meta", dtype=torch.bfloat16), seed=seed)
    assert (y.device.type, y.shape, y.dtype) == ("meta", (2, 3, m.layer.d_model), torch.bfloat16)


def test_fake_tensor_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode
    m = _module("mh_moe_f16")
    with FakeTensorMode() as mode:
        weights = [mode.from_tensor(w) for w in m._weights()]
        x = torch.empty(5, 16)
        outs = torch.ops.moe_mlir.layer_forward(x, weights, m._handle, None)
        ids, _ = torch.ops.moe_mlir.layer_route(x, weights, m._handle, None)
    assert [tuple(o.shape) for o in outs[:3]] == [(5, 16), (10, 2), (10, 2)]
    assert tuple(ids.shape) == (10, 2) and ids.dtype == torch.int32


def test_inference_mode():
    """Inference tensors (no version counter) work as weights and inputs."""
    x = make_x(4, 16, seed=16)
    want = _expected("pkm", x)["out"]
    m = _module("pkm")
    with torch.inference_mode():
        assert_same_bits(m(torch.from_numpy(x)).numpy(), want, "x under inference_mode")
        m2 = _module("pkm")  # buffers are inference tensors
        assert_same_bits(m2(torch.from_numpy(x)).numpy(), want, "module built under it")
        assert_same_bits(m2(torch.from_numpy(x)).numpy(), want, "again")
    assert _entry(m2).binds == 1


def test_opcheck():
    """torch.library.opcheck: schema, fake kernel and autograd registration
    agree with the real kernel."""
    m = _module("shared_noisy")
    x = torch.from_numpy(make_x(4, 16))
    args = (x, m._weights(), m._handle, SEED["shared_noisy"])
    torch.library.opcheck(torch.ops.moe_mlir.layer_forward.default, args)
    torch.library.opcheck(torch.ops.moe_mlir.layer_route.default, args)


# --------------------------------------------------------------------------- #
# Seeds, errors
# --------------------------------------------------------------------------- #

def test_seed_is_taken_mod_2_64_as_layer_takes_it():
    m = _module("shared_noisy")
    x = make_x(4, 16, seed=15)
    bound = _layer("shared_noisy").bind(**make_weights(SPECS["shared_noisy"]))
    for seed in (0, 7, -1, 2**63, 2**64 + 5, np.uint64(2**64 - 3)):
        assert_same_bits(m(torch.from_numpy(x), seed=seed).numpy(), bound(x, seed=seed),
                         f"seed {seed}")
    assert not torch.equal(m(torch.from_numpy(x), seed=1), m(torch.from_numpy(x), seed=2))
    with pytest.raises(ValueError, match="noisy router: pass seed"):
        m(torch.from_numpy(x))
    with pytest.raises(ValueError, match="seed must be an integer"):
        m(torch.from_numpy(x), seed=1.5)


def _weights_with(kind, name, value):
    W = _tensors(make_weights(SPECS[kind]))
    W[name] = value
    return W


@pytest.mark.parametrize("kind,name,value,match", [
    ("shared_noisy", "w1", torch.zeros(4, 9, 15), r"weight 'w1' must have shape \[4, 9, 16\]"),
    ("shared_noisy", "w2", torch.zeros(4, 16, 9, dtype=torch.float64),
     "weight 'w2' .f32. must be float32, bfloat16, float16, got float64"),
    ("mixtral_bf16", "gate", torch.zeros(6, 24, dtype=torch.float16),
     "weight 'gate' .bf16. must be bfloat16, float32, got float16"),
    ("pkm", "bn_var", torch.zeros(16, dtype=torch.int64), "weight 'bn_var' .f32."),
    ("pkm", "values", np.zeros((16, 16), dtype=np.float64), "weight 'values' must be float32"),
    ("pkm", "keys1", [[0.0] * 4] * 4, "weight 'keys1' must be a torch.Tensor or numpy.ndarray"),
])
def test_bad_weights_name_the_weight(kind, name, value, match):
    with pytest.raises(ValueError, match=match):
        mt.MoELayer(_layer(kind), _weights_with(kind, name, value))


def test_spec_forms():
    """The spec as moe_mlir.compile takes it: a dict or YAML text (the same
    compiled layer from the cache), and the normalized spec as .spec."""
    import json
    W = _tensors(make_weights(SPECS["pkm"]))
    x = torch.from_numpy(make_x(3, 16))
    want = _expected("pkm", x.numpy())["out"]
    for spec in (SPECS["pkm"], json.dumps(SPECS["pkm"], indent=1)):
        m = mt.MoELayer(spec, W, opt_level=3)
        assert m.spec == moe_mlir.load_spec(SPECS["pkm"])
        assert isinstance(m.layer, moe_mlir.Layer)
        assert_same_bits(m(x).numpy(), want, "spec form")


def test_compiled_layer_takes_no_compile_options():
    W = _tensors(make_weights(SPECS["pkm"]))
    with pytest.raises(ValueError, match="takes no pipeline or compile options"):
        mt.MoELayer(_layer("pkm"), W, opt_level=2)
    with pytest.raises(ValueError, match="takes no pipeline or compile options"):
        mt.MoELayer(_layer("pkm"), W, pipeline="reference")


def test_missing_and_unknown_weights():
    W = _tensors(make_weights(SPECS["pkm"]))
    del W["keys2"]
    with pytest.raises(ValueError, match="missing weight 'keys2'"):
        mt.MoELayer(_layer("pkm"), W)
    W = _tensors(make_weights(SPECS["pkm"]))
    W["w9"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown weight 'w9'"):
        mt.MoELayer(_layer("pkm"), W)


def test_bad_inputs():
    m = _module("pkm")
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 16\], got \[3, 15\]"):
        m(torch.zeros(3, 15))
    with pytest.raises(ValueError, match="float32, bfloat16 or float16, got float64"):
        m(torch.zeros(3, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one token"):
        m(torch.zeros(0, 16))
    # The op itself checks x and the weights, as Layer does.
    w = m._weights()
    with pytest.raises(ValueError, match="x must be float32"):
        torch.ops.moe_mlir.layer_forward(torch.zeros(3, 16, dtype=torch.bfloat16), w, m._handle, None)
    with pytest.raises(ValueError, match=r"takes 8 weights .*, got 7"):
        torch.ops.moe_mlir.layer_forward(torch.zeros(3, 16), w[:-1], m._handle, None)
    with pytest.raises(ValueError, match=r"weight 'query' must have shape \[16, 16\]"):
        torch.ops.moe_mlir.layer_forward(torch.zeros(3, 16), [torch.zeros(16, 15)] + w[1:],
                                         m._handle, None)
    with pytest.raises(ValueError, match="no moe_mlir layer is registered under handle -5"):
        torch.ops.moe_mlir.layer_forward(torch.zeros(3, 16), w, -5, None)


def test_no_backward():
    """Forward works on inputs that require grad (a model run without
    no_grad); backward raises, saying the layer is inference-only."""
    m = _module("pkm")
    x = torch.from_numpy(make_x(3, 16)).requires_grad_()
    y = m(x)
    assert torch.equal(y.detach(), m(x.detach()))
    with pytest.raises(RuntimeError, match="inference-only: they have no backward"):
        y.sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_need_a_cuda_layer():
    """A CPU layer refuses CUDA tensors (compile with target="cuda" for them)."""
    m = _module("pkm")
    with pytest.raises(ValueError, match=r"compiled for the CPU: CUDA tensors need a layer "
                                         r"compiled for CUDA \(target='cuda'\)"):
        m(torch.zeros(3, 16, device="cuda"))
    with pytest.raises(ValueError, match=r"compiled for the CPU: CUDA tensors need a layer"):
        torch.ops.moe_mlir.layer_forward(torch.zeros(3, 16, device="cuda"),
                                         [w.cuda() for w in m._weights()], m._handle, None)
    with pytest.raises(ValueError, match=r"weight 'query': CUDA tensors need a layer"):
        mt.MoELayer(_layer("pkm"), _weights_with("pkm", "query", torch.zeros(16, 16, device="cuda")))


def test_cuda_tensors_refused_without_a_gpu():
    """The same errors where no GPU is present: a fake CUDA tensor reaches
    the module's check, and the op's device check sees a CUDA device."""
    from types import SimpleNamespace

    from torch._subclasses.fake_tensor import FakeTensorMode
    m = _module("pkm")
    with FakeTensorMode():
        x = torch.empty(3, 16, device="cuda")
        with pytest.raises(ValueError, match=r"compiled for the CPU: CUDA tensors need a layer"):
            m(x)
    cuda = SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.raises(ValueError, match=r"CUDA tensors need a layer compiled for CUDA"):
        mt._check_device(torch.zeros(3, 16), [torch.zeros(1), cuda])


def test_deepcopy_and_numpy_weights():
    """deepcopy shares the compiled layer, copies the weights (its own
    handle); NumPy weights are shared, read-only ones copied."""
    import copy
    W = make_weights(SPECS["pkm"])
    W["values"].setflags(write=False)
    m = mt.MoELayer(_layer("pkm"), W)
    assert m.query.data_ptr() == W["query"].ctypes.data
    assert m.values.data_ptr() != W["values"].ctypes.data
    c = copy.deepcopy(m)
    assert c.layer is m.layer and c._handle != m._handle
    assert c.query.data_ptr() != m.query.data_ptr()
    x = torch.from_numpy(make_x(3, 16))
    assert torch.equal(c(x), m(x))
    with torch.no_grad():
        c.values.zero_()
    assert not torch.equal(c(x), m(x))
    assert torch.equal(m(x), torch.from_numpy(_expected("pkm", x.numpy())["out"]))


def test_calls_from_threads():
    """Concurrent calls on one module (one binding, taken under its lock)
    give the single-threaded bits."""
    from concurrent.futures import ThreadPoolExecutor
    m = _module("shared_noisy")
    xs = [torch.from_numpy(make_x(3 + i % 4, 16, seed=i)) for i in range(16)]
    want = [m(x, seed=5) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: m(x, seed=5), xs))
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert _entry(m).binds == 1


def test_unregistered_when_the_module_is_gone():
    import gc
    m = _module("pkm")
    handle = m._handle
    assert mt._entry(handle).layer is m.layer
    del m
    gc.collect()
    with pytest.raises(ValueError, match=f"handle {handle}"):
        mt._entry(handle)


# --------------------------------------------------------------------------- #
# Hash routing: token_ids
# --------------------------------------------------------------------------- #

# DeepSeek-V4's hash layers: experts looked up by token id (tid2eid).
HASH_SPEC = moe_spec("to_hash", d_model=16, experts=6, expert_hidden=8,
                     router={"top_k": 2, "score": "sqrt_softplus", "normalize": True,
                             "scaling": 1.5, "hash_vocab": 64},
                     shared_experts={"hidden": 8})


def test_hash_routed_module_takes_token_ids():
    """token_ids shaped as input_ids ([B, S] int64): the same bits as
    Layer.forward on the flattened tokens, eager and under
    torch.compile(fullgraph=True) (static and dynamic T); the fake kernel
    gives the shapes with token_ids; tid2eid as int64 (transformers'
    buffer) is kept as int32."""
    layer = moe_mlir.compile(HASH_SPEC, pipeline="reference")   # compiles ~4x faster
    W = make_weights(HASH_SPEC)
    tensors = _tensors(W)
    tensors["tid2eid"] = tensors["tid2eid"].long()
    m = mt.MoELayer(layer, tensors)
    assert m.tid2eid.dtype == torch.int32
    g = torch.Generator().manual_seed(0)
    x = torch.from_numpy(make_x(10, 16)).reshape(2, 5, 16)
    ids = torch.randint(0, 64, (2, 5), generator=g)
    want = layer.forward(x.reshape(10, 16).numpy(), token_ids=ids.reshape(-1).numpy(), **W)
    with torch.no_grad():
        got = m.forward_all(x, token_ids=ids)
    _assert_outputs({"out": got["out"].reshape(10, 16), **{k: v for k, v in got.items()
                                                           if k != "out"}}, want, "hash")
    r_ids, r_w = m.route(x, token_ids=ids)
    assert_same_bits(r_ids.numpy(), want["topk_ids"], "route topk_ids")
    assert_same_bits(r_w.numpy(), want["topk_weights"], "route topk_weights")
    assert torch.equal(m(x, token_ids=ids.int()), got["out"])
    torch._dynamo.reset()
    cm = torch.compile(m, fullgraph=True)
    assert torch.equal(cm(x, token_ids=ids), got["out"])
    dyn = torch.compile(lambda x, t: m(x, token_ids=t), fullgraph=True, dynamic=True)
    for T in (3, 8):
        xt = torch.from_numpy(make_x(T, 16, seed=T))
        t = torch.randint(0, 64, (T,), generator=g)
        assert torch.equal(dyn(xt, t), m(xt, token_ids=t)), f"dynamic T={T}"
    meta = torch.ops.moe_mlir.layer_forward(torch.empty(3, 16, device="meta"),
                                            [w.to("meta") for w in m._weights()], m._handle,
                                            None, torch.empty(3, dtype=torch.long,
                                                              device="meta"))
    assert [(o.shape, o.dtype) for o in meta[:3]] == [
        ((3, 16), torch.float32), ((3, 2), torch.int32), ((3, 2), torch.float32)]
    assert _entry(m).binds == 1
    with pytest.raises(ValueError, match="routes by token id"):
        m(x)
    with pytest.raises(ValueError, match=r"token_ids must have shape \[2, 5\]"):
        m(x, token_ids=ids.reshape(-1))
    with pytest.raises(ValueError, match=r"token_ids must lie in \[0, 64\)"):
        m(x, token_ids=ids + 64)
    with pytest.raises(ValueError, match="takes no token_ids"):
        _module("pkm")(x, token_ids=ids)


def test_import_moe_mlir_does_not_import_torch():
    code = "import sys, moe_mlir; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={"PYTHONPATH": moe_mlir.__file__.rsplit("/moe_mlir/", 1)[0],
                        "PATH": "/usr/bin:/bin"})
