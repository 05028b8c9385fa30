//===- Passes.td - conversions out of the moe dialect ------*- tablegen -*-===//

#ifndef MOE_CONVERSION_PASSES_TD
#define MOE_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertMoEToLinalg : Pass<"convert-moe-to-linalg", "ModuleOp"> {
  let summary = "Reference lowering of every moe op to linalg, scf and tensor";
  let description = [{
    Lowers each `moe` op on its own to `linalg`, `scf`, `tensor`, `arith` and
    `math` ops on tensors, computing exactly the semantics of
    docs/semantics.md. This is the oracle inside the compiler and the
    fallback of every pipeline: it favours clarity over speed (no fusion
    across ops, loops over tokens where the computation is irregular).
    Fails on any `moe` op it cannot lower.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect", "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def ConvertMoEToCPU : Pass<"convert-moe-to-cpu", "ModuleOp"> {
  let summary = "Fast CPU lowering of the expert path and projections";
  let description = [{
    Rewrites `moe.expert_ffn` (with the `moe.gather` feeding it fused on
    load), `moe.shared_expert`, `moe.combine` and `moe.linear` into
    vectorised row-dot tiles inside `scf.forall` loops over buffers
    (`bufferization.to_buffer` of the operands, results through
    `bufferization.to_tensor`). Every other op is left for
    `convert-moe-to-linalg`. The tile sizes fix the work partition and the
    order of every sum, so results are bit-identical for any thread count
    and any batch a token runs in. A size of 0 takes the target default.
  }];
  let options = [
    Option<"vectorWidth", "vector-width", "int64_t", /*default=*/"0",
           "f32 lanes of the dot-product accumulators">,
    Option<"rowTile", "row-tile", "int64_t", /*default=*/"0",
           "rows of a register tile">,
    Option<"colTile", "col-tile", "int64_t", /*default=*/"0",
           "weight rows of a register tile">,
    Option<"rowBlock", "row-block", "int64_t", /*default=*/"0",
           "rows of a work item">,
    Option<"colBlock", "col-block", "int64_t", /*default=*/"0",
           "output columns of a work item">,
    Option<"tokenBlock", "token-block", "int64_t", /*default=*/"0",
           "tokens of a work item of token-parallel loops">,
    Option<"depthBlock", "depth-block", "int64_t", /*default=*/"0",
           "depth (k) elements per chunk of a long dot product">,
    Option<"expertKernel", "expert-kernel", "std::string", /*default=*/"",
           "microkernel of expert MLPs: panel (default) or row-dot">,
    Option<"panelRowTile", "panel-row-tile", "int64_t", /*default=*/"0",
           "rows of a register tile of the panel expert kernel">,
    Option<"panelColVectors", "panel-col-vectors", "int64_t",
           /*default=*/"0",
           "column vectors of a register tile of the panel expert kernel">,
    Option<"panelDepthBlock", "panel-depth-block", "int64_t",
           /*default=*/"0",
           "depth of a packed weight panel of the panel expert kernel">,
    Option<"l1Ways", "l1-ways", "int64_t", /*default=*/"0",
           "ways of the L1 data cache, the most rows of a panel register "
           "tile (0: the host's)">,
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::bufferization::BufferizationDialect",
    "::mlir::math::MathDialect", "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect", "::mlir::tensor::TensorDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def MoEPackExpertWeights : Pass<"moe-pack-expert-weights", "ModuleOp"> {
  let summary = "Add a packed-weights variant and its packing function to each layer";
  let description = [{
    For every public layer function `@L` whose expert MLP weights (`w1`,
    `w2`, `w3` of `moe.expert_ffn` and `moe.shared_expert`, [(E,) N, K]) are
    function arguments, adds

    - `@L__pack(w...) -> (w_packed...)`: each weight `linalg.pack`ed
      into the panel layout of the fast CPU kernels, [(E,) ceil(N / P), K, P]
      with P the columns of one register tile (the tail tile zero-padded);
    - `@L__packed`: `@L` taking those packed weights and `linalg.unpack`ing
      them, which `convert-moe-to-cpu` folds into the kernels' loads: the
      panels are read as packed, and never unpacked.

    The variants carry `moe.layer = "L"` and `moe.variant` (`pack_weights`,
    `packed_forward`), from which `moe-create-c-entry-points` names their C
    entry points `L_pack_weights` and `L_forward_packed`. P follows
    `vector-width` and `panel-col-vectors`, which must match the options of
    `convert-moe-to-cpu`; packed weights of other widths still run
    (unpacked first), only slower.
  }];
  let options = [
    Option<"vectorWidth", "vector-width", "int64_t", /*default=*/"0",
           "f32 lanes of the panel kernels' vectors (0: as convert-moe-to-cpu)">,
    Option<"panelColVectors", "panel-col-vectors", "int64_t",
           /*default=*/"0",
           "column vectors of a register tile of the panel kernels (0: as "
           "convert-moe-to-cpu)">,
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::linalg::LinalgDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def ConvertMoEToGPU : Pass<"convert-moe-to-gpu", "ModuleOp"> {
  let summary = "GPU lowering of the moe ops whose reference lowering would "
                "serialise on a GPU";
  let description = [{
    Runs on tensors before the reference lowering (`convert-moe-to-linalg`
    lowers what is left). `moe.expert_ffn` becomes row-parallel
    contractions: each dispatched row finds its expert by a fixed-length
    bisection of the clamped offsets and gathers that expert's weights on
    load, so no loop over experts with sizes read from device memory is
    left for the host. `moe.dispatch_plan` without capacity becomes chunked
    parallel counts per (chunk of 256 assignments, expert), a scan over the
    experts (E sequential steps) and a slot-parallel gather in which each
    slot finds its expert and chunk by bisection and its assignment by a scan
    of the chunk: integers and copied weights, the reference's exactly.
    `moe.combine` becomes a counting sort of the slots by
    token (sequential scalar work, O(S + T)) and a gather-sum per (token,
    column) in slot order, instead of one row update per slot. Every sum
    runs in the reference lowering's order:
    the results are the reference's bits, and a row's do not depend on the
    other rows.

    With `tensor-cores=mma`, the GEMMs of bf16 expert weights run instead on
    warp-level `nvvm.mma.sync` m16n8k16 tiles (16 rows × 8 columns per warp,
    once per distinct expert of the tile's rows, f32 accumulation in a fixed
    order: still independent of the batch and deterministic, but not the
    reference's order of sums). `mma-precision=f32` splits the f32
    activations into three exact bf16 terms (three MMAs per step, results
    within f32 rounding of the reference); `bf16` rounds them once.
    Those tiles are `moe.warp_mma` ops, lowered in the kernels by
    `convert-moe-warp-mma-to-nvvm`. `tensor-cores=emulate` builds the same
    tiles with the instruction
    replaced by plain code reading the fragment registers lane by lane, so
    the CPU can run them.
  }];
  let options = [
    Option<"tensorCores", "tensor-cores", "std::string", "\"none\"",
           "bf16 expert GEMMs: none (one thread per output), mma "
           "(nvvm.mma.sync tiles) or emulate (those tiles in plain code)">,
    Option<"mmaPrecision", "mma-precision", "std::string", "\"f32\"",
           "Activations on tensor cores: f32 (three exact bf16 terms) or "
           "bf16 (rounded once)">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::linalg::LinalgDialect",
    "::mlir::scf::SCFDialect", "::mlir::tensor::TensorDialect"
  ];
}

def ConvertMoEWarpMMAToNVVM : Pass<"convert-moe-warp-mma-to-nvvm"> {
  let summary = "Lower moe.warp_mma to nvvm.mma.sync";
  let description = [{
    Runs in the kernels (`gpu.module`s) before `convert-gpu-to-nvvm`: each
    `moe.warp_mma` becomes `nvvm.mma.sync` m16n8k16 with bf16 multiplicands
    (row-major A, column-major B) and f32 accumulators, its four results
    taken out of the instruction's struct. MLIR 22's nvgpu path refuses
    bf16, so the NVVM op is built directly.
  }];
  let dependentDialects = [
    "::mlir::LLVM::LLVMDialect", "::mlir::NVVM::NVVMDialect"
  ];
}

def MoEMapToGPU : Pass<"moe-map-to-gpu", "ModuleOp"> {
  let summary = "Map the work of host functions on device buffers to GPU "
                "launches";
  let description = [{
    Runs on buffers after bufferization and `convert-linalg-to-parallel-loops`
    (CUDA target), where every buffer is device memory: the host may compute
    sizes, views and pointers and call the runtime, but every load and store
    must run on the device. In each function outside `gpu.module`s:

    - `memref.copy` becomes a parallel loop nest;
    - each outermost `scf.parallel` without reductions has its dimensions
      collapsed into one and tiled by `threads-per-block`, the tiles mapped
      to blocks and the tile's iterations to threads (`gpu.launch`); loops
      nested in it run sequentially in each thread;
    - an `scf.for` or `scf.if` without results that holds such loops stays
      on the host (its bounds or condition are host values) and its body is
      mapped the same way;
    - every other run of ops that touch memory moves into a one-thread
      `gpu.launch`, in program order, with the side-effect-free host ops
      between them that use their results.

    A value computed on the device and used by the host is an error. Launch
    order is program order on one stream, so no synchronisation is needed.
    `gpu-kernel-outlining` turns the launches into kernels.
  }];
  let options = [
    Option<"threadsPerBlock", "threads-per-block", "int64_t",
           /*default=*/"256", "threads of a block of a parallel loop's grid">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::gpu::GPUDialect",
    "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect"
  ];
}

def MoEMergeKernelModules : Pass<"moe-merge-kernel-modules", "ModuleOp"> {
  let summary = "Move every outlined kernel into one gpu.module";
  let description = [{
    `gpu-kernel-outlining` gives each kernel a `gpu.module` of its own. This
    pass moves all of them into one `gpu.module @<module-name>` (each kernel
    renamed after its old module, which is unique) and updates the launches,
    so that a layer is one image to compile, embed and load. Runs before a
    target is attached.
  }];
  let options = [
    Option<"moduleName", "module-name", "std::string",
           /*default=*/"\"moe_kernels\"", "name of the merged gpu.module">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect"];
}

def MoELowerGPULaunches : Pass<"moe-lower-gpu-launches", "ModuleOp"> {
  let summary = "Embed GPU binaries and turn kernel launches into runtime "
                "calls";
  let description = [{
    Runs after `gpu-module-to-binary`, on the host functions (still on
    memrefs). Every `gpu.binary` (one object: one target) becomes an internal
    constant `llvm.mlir.global` `@<module>_image` holding the cubin, fatbin or
    PTX; every `gpu.launch_func` becomes

    ```mlir
    func.call @moe_rt_cuda_launch(%image, %kernel_name, %gx, %gy, %gz,
        %bx, %by, %bz, %shared_bytes, %params)
    ```

    where `%params` is an array of pointers to one stack slot per kernel
    parameter, expanded as the NVVM lowering expands the kernel's arguments
    (a memref as its allocated and aligned pointers, offset, sizes and
    strides; an index as i64). The runtime loads each image once and launches
    on the stream the entry point was called with.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::func::FuncDialect",
    "::mlir::LLVM::LLVMDialect", "::mlir::memref::MemRefDialect"
  ];
}

#endif // MOE_CONVERSION_PASSES_TD
