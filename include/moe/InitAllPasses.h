//===- InitAllPasses.h - register the project's passes ----------*- C++ -*-===//

#ifndef MOE_INITALLPASSES_H
#define MOE_INITALLPASSES_H

#include "moe/ABI/Passes.h"
#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"
#include "moe/Pipelines/Pipelines.h"
#include "moe/Transforms/Passes.h"

namespace mlir::moe {
inline void registerAllPasses() {
  registerMoEPasses();
  registerMoEConversionPasses();
  registerMoEABIPasses();
  registerMoETransformsPasses();
  registerMoEPipelines();
}
} // namespace mlir::moe

#endif // MOE_INITALLPASSES_H
