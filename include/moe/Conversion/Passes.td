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

#endif // MOE_CONVERSION_PASSES_TD
