//===- LayerBuilder.h - build the function of a layer spec ------*- C++ -*-===//

#ifndef MOE_FRONTEND_LAYERBUILDER_H
#define MOE_FRONTEND_LAYERBUILDER_H

#include "moe/Frontend/LayerSpec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace mlir::moe {

/// Registers the dialects that built layer modules use (moe, func, tensor,
/// linalg, arith).
void registerLayerBuilderDialects(DialectRegistry &registry);

/// Builds a module holding one `func.func @<spec.name>` that computes the
/// layer with moe ops. The argument and result contract (names in `moe.name`
/// attributes, order, shapes and element types) is documented in
/// docs/spec.md. Ops are located at the spec fields they come from. Loads the
/// dialects it needs into `context`; the module is not verified here.
OwningOpRef<ModuleOp> buildLayerModule(MLIRContext &context,
                                       const LayerSpec &spec);

} // namespace mlir::moe

#endif // MOE_FRONTEND_LAYERBUILDER_H
