//===- LowerPackUnpack.cpp - linalg.pack/unpack to bufferizable ops -------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::moe {
#define GEN_PASS_DEF_LOWERPACKUNPACK
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {
struct LowerPackUnpackPass
    : moe::impl::LowerPackUnpackBase<LowerPackUnpackPass> {
  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation().walk([&](Operation *op) {
      if (isa<linalg::PackOp, linalg::UnPackOp>(op))
        ops.push_back(op);
    });
    IRRewriter rewriter(&getContext());
    for (Operation *op : ops) {
      rewriter.setInsertionPoint(op);
      bool lowered;
      if (auto pack = dyn_cast<linalg::PackOp>(op))
        lowered = succeeded(linalg::lowerPack(rewriter, pack));
      else
        lowered = succeeded(
            linalg::lowerUnPack(rewriter, cast<linalg::UnPackOp>(op)));
      if (!lowered) {
        op->emitError("cannot lower this op to bufferizable tensor ops");
        return signalPassFailure();
      }
    }
  }
};
} // namespace
