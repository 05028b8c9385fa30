//===- Passes.td - passes on the lowered code of moe layers -*- tablegen -*-===//

#ifndef MOE_TRANSFORMS_PASSES_TD
#define MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def OutlineParallelLoops : Pass<"moe-outline-parallel-loops", "ModuleOp"> {
  let summary = "Outline the bodies of scf.forall loops into parallel launches";
  let description = [{
    Runs after bufferization, on buffers, before any lowering to the LLVM
    dialect. Every outermost `scf.forall` inside a `func.func` becomes

    ```mlir
    func.call @__moe_parallel_launch_<parent>_parallel_<N>(%total, %captured...)
    ```

    where `%total` is the product of the trip counts of its dimensions (a
    negative trip count counts as 0) and the new private function
    `@<parent>_parallel_<N>(%i: index, %captured...)` delinearises `%i` back
    into the induction variables and holds the body. Values used in the body
    and defined above it are passed as arguments, except side-effect-free
    ops without operands (constants), which are cloned into the body. An
    `scf.forall` nested in the body (a fast kernel inside a token tile of
    `moe-tile-token-ops`) is outlined from the body the same way, as
    `@<body>_parallel_<N>`: the runtime runs a launch from inside a task
    inline on that thread, and in parallel when the outer launch had one
    task; each task's stack buffers live in its own frame.

    `@__moe_parallel_launch_<body>` is a private declaration with the
    signature of the body; `moe-lower-parallel-launches` turns its calls into
    calls of the runtime's `moe_rt_parallel_for` once the module is in the
    LLVM dialect. Fails on an `scf.forall` that still has `shared_outs`.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::func::FuncDialect",
    "::mlir::scf::SCFDialect"
  ];
}

def LowerParallelLaunches : Pass<"moe-lower-parallel-launches", "ModuleOp"> {
  let summary = "Lower parallel launches to calls of moe_rt_parallel_for";
  let description = [{
    Runs on the LLVM dialect, after `convert-to-llvm` and
    `reconcile-unrealized-casts`. Each `llvm.call` of
    `@__moe_parallel_launch_<body>(%n, %args...)` becomes

    ```mlir
    // %ctx: an !llvm.struct<(...)> of %args..., allocated in the entry block
    llvm.call @moe_rt_parallel_for(%n, @<body>_trampoline, %ctx)
    ```

    where the internal `@<body>_trampoline(%ctx: !llvm.ptr, %i: i64)` loads
    the arguments back from the struct and calls `@<body>(%i, %args...)`. The
    runtime runs the trampoline for every `%i` in `[0, %n)` on its worker
    threads and returns when all are done. `moe_rt_parallel_for` is declared
    as `void (i64, ptr, ptr)` when absent; the launch declarations are
    erased. Fails when the body of a launch is not defined in the module.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect"];
}

def LowerPackUnpack : Pass<"moe-lower-pack-unpack", "ModuleOp"> {
  let summary = "Lower the linalg.pack/unpack ops left on tensors";
  let description = [{
    One-shot bufferization has no model of `linalg.pack` and
    `linalg.unpack`. The ones the kernels did not fold into their loads (the
    packing functions of `moe-pack-expert-weights`, or packed weights of a
    layout no kernel reads) become upstream's `tensor.pad` +
    `tensor.expand_shape` + `linalg.transpose` (pack) and `linalg.transpose`
    + `tensor.collapse_shape` + `tensor.extract_slice` (unpack), which
    bufferize. Runs on tensors, after the moe lowerings.
  }];
  let dependentDialects = [
    "::mlir::linalg::LinalgDialect", "::mlir::tensor::TensorDialect"
  ];
}

def InlinePrivateFunctions
    : Pass<"moe-inline-private-functions", "ModuleOp"> {
  let summary = "Inline the calls of private functions";
  let description = [{
    Inlines every call of a private function defined in the module (the
    upstream inliner, restricted by its profitability hook) and erases the
    private functions left without calls. `moe-create-c-entry-points` makes
    each layer function private and calls it from its entry point, where the
    results are materialized in the caller's buffers: inlined, the layer's
    producers can write into those buffers, and the work that only an
    optional output needs can move under its NULL check. Public functions
    are the module's interface: their calls are left alone, so they are not
    duplicated into their callers.
  }];
}

def SinkIntoOutputChecks
    : Pass<"moe-sink-into-output-checks", "func::FuncOp"> {
  let summary = "Move work that only an optional output needs under its NULL "
                "check";
  let description = [{
    Runs on tensors, after the layer functions have been inlined into their C
    entry points. For each `scf.if` directly in the function's body (in an
    entry point: the check that the caller passed a buffer for an optional
    output), the side-effect-free ops whose results are used only inside one
    of its regions move into that region, so they run only when the region
    does. In an entry point that is the work of an output nothing else needs,
    such as an aux loss in the reference lowering:

    ```mlir
    %loss = linalg.generic ... -> tensor<f32>
    scf.if %given {
      bufferization.materialize_in_destination %loss in restrict writable %dest
    }
    ```

    becomes

    ```mlir
    scf.if %given {
      %loss = linalg.generic ... -> tensor<f32>
      bufferization.materialize_in_destination %loss in restrict writable %dest
    }
    ```

    Nested `scf.if` ops are left alone: upstream `control-flow-sink` also
    sinks into those, and moves `linalg.index` out of the `linalg.generic`
    it must stay in.
  }];
}

def EliminateResultAllocs
    : Pass<"moe-eliminate-result-allocs", "func::FuncOp"> {
  let summary = "Let kernels write into the buffers their results are "
                "materialized in";
  let description = [{
    Runs on tensors, before bufferization, after the layer functions have been
    inlined into their C entry points. A fast kernel writes its result into a
    `memref.alloc` and hands it to tensor IR with `bufferization.to_tensor
    restrict`; when that tensor is only materialized into a caller's buffer,
    bufferization would copy the allocation into the buffer. This pass makes
    the kernel write into the buffer instead:

    ```mlir
    %out = memref.alloc(%t) : memref<?x64xf32>
    ... kernel writes %out ...
    %r = bufferization.to_tensor %out restrict writable
        : memref<?x64xf32> to tensor<?x64xf32>
    bufferization.materialize_in_destination %r in restrict writable %dest
        : (tensor<?x64xf32>, memref<?x64xf32>) -> ()
    ```

    becomes the kernel writing `%dest`. It applies when the destination is a
    `restrict writable` memref of the allocation's type that dominates the
    allocation and has no other use (so nothing else reads or writes the
    caller's buffer), the tensor has no other use, and every other use of the
    allocation comes before the `to_tensor` (the kernel is done with it).
    Results computed on tensors reach their destinations through upstream
    `eliminate-empty-tensors` instead.
  }];
}

def AllocateScratchUpFront
    : Pass<"moe-allocate-scratch-up-front", "ModuleOp"> {
  let summary = "Take all scratch memory of a C entry point in one checked "
                "allocation before the work";
  let description = [{
    Runs on buffers, after one-shot bufferization and before the buffer
    deallocation pipeline, on the functions marked `moe.returns_status` (the
    C entry points of `moe-create-c-entry-points`, which return a
    `moe_status`); removes the mark. A kernel cannot unwind from inside its
    loop nests, so instead of heap allocations that could fail half-way
    through a layer, every `memref.alloc` of such a function becomes a
    `memref.view` of one scratch buffer, allocated before the first op that
    may write memory:

    ```mlir
    %bytes = ...  // the sum of the slots, from the arguments
    %p = func.call @moe_rt_alloc_scratch(%bytes, %name) : (i64, !llvm.ptr) -> !llvm.ptr
    %null = llvm.icmp "eq" %p, %zero : !llvm.ptr
    cf.cond_br %null, ^oom, ^work
  ^oom:  // the runtime has recorded MOE_ERROR_OUT_OF_MEMORY and its message
    return %c3_i32 : i32
  ^work:
    %scratch = ... %p as memref<?xi8>
    ...
    %buf = memref.view %scratch[%offset][%rows] : memref<?xi8> to memref<?x64xf32>
    ...
    func.call @moe_rt_free_scratch(%p) : (!llvm.ptr) -> ()
    return %c0_i32 : i32
    ```

    A slot's size is the allocation's, computed before the work from the
    values it depends on (cloned side-effect-free ops), or, for a size that
    varies inside a loop (a token tile's rows), its closed upper bound from
    the `ValueBoundsOpInterface`s in terms of values known before the work.
    An allocation inside `scf.forall` bodies gets one slot per iteration
    (the runtime may run them at once), addressed by the induction
    variables; one inside a sequential loop reuses its slot in every
    iteration, which needs the buffer to die with the iteration (no yield,
    return or call of it). Slots start on 64-byte boundaries. An allocation
    whose size has no such bound (it depends on what the kernels compute),
    or inside a region of unknown semantics, stays as it is with a remark
    (with `target=cuda`, an error: device code cannot allocate).
    The scratch buffer is freed before every return after the work. With
    `target=cuda` it is device memory, ordered on the entry point's stream:
    `moe_rt_cuda_alloc_scratch` and `moe_rt_cuda_free_scratch`.
  }];
  let options = [
    Option<"target", "target", "std::string", /*default=*/"\"cpu\"",
           "cpu (host memory) or cuda (device memory on the call's stream)">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::cf::ControlFlowDialect",
    "::mlir::func::FuncDialect", "::mlir::LLVM::LLVMDialect",
    "::mlir::memref::MemRefDialect"
  ];
}

#endif // MOE_TRANSFORMS_PASSES_TD
