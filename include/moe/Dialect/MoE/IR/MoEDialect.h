//===- MoEDialect.h - the moe dialect and its attributes --------*- C++ -*-===//

#ifndef MOE_DIALECT_MOE_IR_MOEDIALECT_H
#define MOE_DIALECT_MOE_IR_MOEDIALECT_H

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"

#include "moe/Dialect/MoE/IR/MoEOpsDialect.h.inc"

#include "moe/Dialect/MoE/IR/MoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/Dialect/MoE/IR/MoEAttrs.h.inc"

namespace mlir::moe {
/// Discardable attributes of layer functions (the front end writes them, the
/// C entry points and header read them).
/// Arg/result attribute: the name of a layer operand in the C ABI.
inline constexpr llvm::StringLiteral kNameAttr = "moe.name";
/// Result attribute: a dynamic dim 0 holds `tokens * value` rows (MH-MoE
/// sub-tokens); 1 when absent.
inline constexpr llvm::StringLiteral kRowsPerTokenAttr = "moe.rows_per_token";
/// Function attributes of a layer's variants (moe-pack-expert-weights): the
/// layer they serve, and which variant they are (`pack_weights`,
/// `packed_forward`).
inline constexpr llvm::StringLiteral kLayerAttr = "moe.layer";
inline constexpr llvm::StringLiteral kVariantAttr = "moe.variant";

/// Attaches TilingInterface (one parallel dim: tokens, or the slots of
/// moe.gather) to the token-parallel ops, and ReifyRankedShapedTypeOpInterface
/// to those of them without destinations. Called by the dialect.
void attachTilingInterfaces(MLIRContext *ctx);

/// Why `op` has no tile along its dim 0 (not a token-parallel op, a noisy
/// route, whose noise is keyed by the token's position, a rank-1 top-k, a
/// dynamic result dim other than dim 0), or "" when it has.
StringRef whyNotTokenTileable(Operation *op);

/// The tensor operands a tile of a token-parallel op reads whole: weights,
/// sub-key tables, BatchNorm statistics, the selection bias, the rows
/// moe.gather reads. Every other tensor operand is sliced along dim 0.
SmallVector<OpOperand *> getPerLayerOperands(Operation *op);

/// True for the activations that multiply by the `w3` (up) projection.
inline bool isGatedActivation(Activation act) {
  return act == Activation::swiglu || act == Activation::geglu ||
         act == Activation::geglu_tanh;
}
} // namespace mlir::moe

#endif // MOE_DIALECT_MOE_IR_MOEDIALECT_H
