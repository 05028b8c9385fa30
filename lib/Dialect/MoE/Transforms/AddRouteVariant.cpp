//===- AddRouteVariant.cpp - a routing-only copy of each layer ------------===//
//
// Asking a layer for its routing should not run its experts. A copy of the
// layer that returns only the routing results, with everything else dead
// erased, computes exactly the routing of the layer at the router's cost.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/LayerFunctions.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/BitVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEADDROUTEVARIANT
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
/// The index of the result of `fn` named `name`, if any.
std::optional<unsigned> resultNamed(func::FuncOp fn, StringRef name) {
  for (unsigned i = 0, e = fn.getNumResults(); i < e; ++i)
    if (auto attr = fn.getResultAttrOfType<StringAttr>(i, kNameAttr))
      if (attr.getValue() == name)
        return i;
  return std::nullopt;
}

struct MoEAddRouteVariantPass
    : moe::impl::MoEAddRouteVariantBase<MoEAddRouteVariantPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    for (func::FuncOp layer : getLayerFunctions(module)) {
      std::optional<unsigned> ids = resultNamed(layer, "topk_ids");
      std::optional<unsigned> weights = resultNamed(layer, "topk_weights");
      if (ids && weights)
        buildRouteVariant(layer, {*ids, *weights}, symbols);
    }
  }

  static void buildRouteVariant(func::FuncOp layer, ArrayRef<unsigned> kept,
                                SymbolTable &symbols) {
    MLIRContext *ctx = layer.getContext();
    OpBuilder b(ctx);
    b.setInsertionPointAfter(layer);
    auto fn = cast<func::FuncOp>(b.clone(*layer));
    fn.setSymName((layer.getSymName() + "__route").str());
    symbols.insert(fn);
    markLayerVariant(fn, layer, "route");

    // Return only the routing results; what fed nothing else dies.
    auto ret = cast<func::ReturnOp>(fn.getBody().front().getTerminator());
    SmallVector<Value> values;
    for (unsigned i : kept)
      values.push_back(ret.getOperand(i));
    ret->setOperands(values);
    llvm::BitVector droppedResults(fn.getNumResults(), true);
    for (unsigned i : kept)
      droppedResults.reset(i);
    if (failed(fn.eraseResults(droppedResults)))
      llvm_unreachable("a func.func can always drop results");
    IRRewriter rewriter(ctx);
    (void)runRegionDCE(rewriter, fn.getBody());

    // Arguments nothing reads any more (the expert weights) are dropped,
    // so callers pass only what routing needs.
    llvm::BitVector unusedArgs(fn.getNumArguments());
    for (BlockArgument arg : fn.getArguments())
      if (arg.use_empty() && arg.getArgNumber() != 0)
        unusedArgs.set(arg.getArgNumber());
    if (failed(fn.eraseArguments(unusedArgs)))
      llvm_unreachable("a func.func can always drop arguments");
  }
};
} // namespace
