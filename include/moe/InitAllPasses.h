//===- InitAllPasses.h - register the project's passes ----------*- C++ -*-===//

#ifndef MOE_INITALLPASSES_H
#define MOE_INITALLPASSES_H

#include "moe/Dialect/MoE/Transforms/Passes.h"

namespace mlir::moe {
inline void registerAllPasses() { registerMoEPasses(); }
} // namespace mlir::moe

#endif // MOE_INITALLPASSES_H
