//===- RoutingToLinalg.cpp - reference lowering of routing ops ------------===//

#include "LoweringUtils.h"
#include "moe/Conversion/MoEToLinalg/MoEToLinalg.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace mlir::moe;

void mlir::moe::populateRoutingLoweringPatterns(RewritePatternSet &patterns) {}
