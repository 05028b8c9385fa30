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
    ops without operands (constants), which are cloned into the body. Nested
    `scf.forall` ops in the body become sequential `scf.for` nests: the
    outermost loop carries the parallelism.

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

#endif // MOE_TRANSFORMS_PASSES_TD
