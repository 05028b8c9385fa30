//===- WarpMMAToNVVM.cpp - moe.warp_mma as nvvm.mma.sync ------------------===//

#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOEWARPMMATONVVM
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
struct ConvertMoEWarpMMAToNVVMPass
    : moe::impl::ConvertMoEWarpMMAToNVVMBase<ConvertMoEWarpMMAToNVVMPass> {
  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    getOperation()->walk([&](WarpMMAOp op) {
      rewriter.setInsertionPoint(op);
      Location loc = op.getLoc();
      Type f32 = rewriter.getF32Type();
      auto structType =
          LLVM::LLVMStructType::getLiteral(&getContext(), {f32, f32, f32, f32});
      auto mma = NVVM::MmaOp::create(
          rewriter, loc, structType,
          ValueRange{op.getA0(), op.getA1(), op.getA2(), op.getA3()},
          ValueRange{op.getB0(), op.getB1()},
          ValueRange{op.getC0(), op.getC1(), op.getC2(), op.getC3()},
          /*shape=*/{16, 8, 16}, /*b1Op=*/std::nullopt,
          /*intOverflow=*/std::nullopt,
          std::array{NVVM::MMATypes::bf16, NVVM::MMATypes::bf16},
          std::array{NVVM::MMALayout::row, NVVM::MMALayout::col});
      SmallVector<Value> results;
      for (int64_t i = 0; i < 4; ++i)
        results.push_back(LLVM::ExtractValueOp::create(rewriter, loc, mma, i));
      rewriter.replaceOp(op, results);
    });
  }
};
} // namespace
