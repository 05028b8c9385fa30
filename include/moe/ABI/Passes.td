//===- Passes.td - exporting layers through the C ABI ------*- tablegen -*-===//

#ifndef MOE_ABI_PASSES_TD
#define MOE_ABI_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoECreateCEntryPoints : Pass<"moe-create-c-entry-points", "ModuleOp"> {
  let summary = "Export every public layer function through the C ABI";
  let description = [{
    For each public `func.func` whose arguments are tensors (the first being
    the tokens `tensor<?xDxf32>`) and optionally an i64 seed, creates

      int32_t <layer>_forward(int64_t tokens, int64_t d_model,
                              <inputs/weights: pointers>, [uint64_t seed],
                              <outputs: pointers>)

    which validates its arguments (tokens in [1, the layer's max tokens]: no
    more than its per-token buffers and tensors can index within 2^47 bytes
    and its 32-bit dispatch counts can count; d_model equal to the compiled
    width; no NULL input, weight or `out` pointer), reports a failure through
    the runtime (`moe_rt_fail`) with a status code and message, wraps the
    caller's buffers as tensors and writes the results into the caller's
    output buffers (optional outputs may be NULL). The layer function becomes
    private. Runs on tensors, before bufferization, so that one-shot
    bufferization can write results straight into the caller's buffers.

    With `target=cuda` the buffers are device pointers and a `void *stream`
    follows the outputs: after its checks the entry point calls
    `moe_rt_cuda_begin(stream, name)` (no driver or device: its status is
    returned, nothing runs) and returns `moe_rt_cuda_end()`, the status of
    the kernel launches, which run asynchronously on the stream.
  }];
  let options = [
    Option<"target", "target", "std::string", /*default=*/"\"cpu\"",
           "cpu, or cuda (device buffers and a CUstream argument)">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::bufferization::BufferizationDialect",
    "::mlir::cf::ControlFlowDialect", "::mlir::func::FuncDialect",
    "::mlir::LLVM::LLVMDialect", "::mlir::scf::SCFDialect"
  ];
}

#endif // MOE_ABI_PASSES_TD
