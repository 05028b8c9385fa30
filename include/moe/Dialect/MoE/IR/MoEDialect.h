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
/// True for the activations that multiply by the `w3` (up) projection.
inline bool isGatedActivation(Activation act) {
  return act == Activation::swiglu || act == Activation::geglu;
}
} // namespace mlir::moe

#endif // MOE_DIALECT_MOE_IR_MOEDIALECT_H
