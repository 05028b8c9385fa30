//===- LayerFunctions.h - layers and their variants in a module -*- C++ -*-===//
//
// A layer is a public func.func with a body; the passes that add variants
// beside it (moe-pack-expert-weights, moe-add-route-variant) mark each with
// the layer it serves and which variant it is (kLayerAttr, kVariantAttr).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_LAYERFUNCTIONS_H
#define MOE_DIALECT_MOE_IR_LAYERFUNCTIONS_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::moe {

/// The layers of `module`, variants excluded.
inline SmallVector<func::FuncOp> getLayerFunctions(ModuleOp module) {
  SmallVector<func::FuncOp> layers;
  for (auto fn : module.getOps<func::FuncOp>())
    if (fn.isPublic() && !fn.isExternal() && !fn->hasAttr(kVariantAttr))
      layers.push_back(fn);
  return layers;
}

/// Marks `fn` as the variant `variant` of `layer`.
inline void markLayerVariant(func::FuncOp fn, func::FuncOp layer,
                             StringRef variant) {
  MLIRContext *ctx = fn.getContext();
  fn->setAttr(kLayerAttr, StringAttr::get(ctx, layer.getSymName()));
  fn->setAttr(kVariantAttr, StringAttr::get(ctx, variant));
}

} // namespace mlir::moe

#endif // MOE_DIALECT_MOE_IR_LAYERFUNCTIONS_H
