//===- InitAllDialects.h - register the project's dialects ------*- C++ -*-===//

#ifndef MOE_INITALLDIALECTS_H
#define MOE_INITALLDIALECTS_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/IR/DialectRegistry.h"

namespace mlir::moe {
inline void registerAllDialects(DialectRegistry &registry) {
  registry.insert<MoEDialect>();
}
} // namespace mlir::moe

#endif // MOE_INITALLDIALECTS_H
