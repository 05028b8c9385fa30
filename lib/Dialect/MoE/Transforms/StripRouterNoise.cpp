//===- StripRouterNoise.cpp - drop noisy gating for inference -------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESTRIPROUTERNOISE
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
struct DropRouteNoise : OpRewritePattern<RouteOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(RouteOp route,
                                PatternRewriter &rewriter) const override {
    if (!route.isNoisy())
      return rewriter.notifyMatchFailure(route, "route has no noise");
    rewriter.modifyOpInPlace(route, [&] {
      route.getNoiseLogitsMutable().clear();
      route.getSeedMutable().clear();
    });
    return success();
  }
};

struct MoEStripRouterNoisePass
    : moe::impl::MoEStripRouterNoiseBase<MoEStripRouterNoisePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<DropRouteNoise>(&getContext());
    // Dead noise projections go too: the driver erases trivially dead ops.
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
