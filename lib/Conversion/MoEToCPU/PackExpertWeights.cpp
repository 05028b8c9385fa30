//===- PackExpertWeights.cpp - packed-weights variants of layers ----------===//
//
// Decode streams every expert weight once per token; in the PyTorch
// [out, in] layout a panel tile reads vw rows at once, which the prefetchers
// follow badly, and prefill repacks the same panels for every work item.
// Packing once ahead of time into the kernels' panel layout makes each tile
// one contiguous stream. The layout is upstream's `linalg.pack`, so the
// packing function is ordinary IR, and the packed layer is the layer behind
// `linalg.unpack`s that the CPU kernels fold into their loads.
//
//===----------------------------------------------------------------------===//

#include "PanelKernels.h"

#include "moe/ABI/SizeLimits.h"
#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/LayerFunctions.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEPACKEXPERTWEIGHTS
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
/// A weight argument of a layer and the panel width its kernel reads.
struct PackedWeight {
  unsigned argument;
  int64_t tileCols;
};

/// `w` in the panel layout: [(E,) N, K] -> [(E,) ceil(N / P), K, P].
static RankedTensorType packedType(RankedTensorType w, int64_t tileCols) {
  return linalg::PackOp::inferPackedType(
      w, {tileCols}, {w.getRank() - 2});
}

struct MoEPackExpertWeightsPass
    : moe::impl::MoEPackExpertWeightsBase<MoEPackExpertWeightsPass> {
  using MoEPackExpertWeightsBase::MoEPackExpertWeightsBase;

  void runOnOperation() override {
    // The defaults of convert-moe-to-cpu, so that its kernels read the
    // packed panels as they are.
    CPUKernelConfig config = CPUKernelConfig::forTarget("native", "");
    if (vectorWidth > 0)
      config.vectorWidth = vectorWidth;
    if (panelColVectors > 0)
      config.panelColVectors = panelColVectors;

    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    for (func::FuncOp layer : getLayerFunctions(module)) {
      SmallVector<PackedWeight> weights = findPackableWeights(layer, config);
      if (weights.empty() || !packedWeightsFit(layer, weights))
        continue;
      buildPackFunction(layer, weights, symbols);
      buildPackedLayer(layer, weights, symbols);
    }
  }

  /// Whether every packed weight can be addressed: padding to whole panels
  /// can take a weight that fits past kMaxBufferBytes, and the variant is
  /// an optimisation the layer can do without.
  static bool packedWeightsFit(func::FuncOp layer,
                               ArrayRef<PackedWeight> weights) {
    return llvm::all_of(weights, [&](const PackedWeight &w) {
      auto type =
          cast<RankedTensorType>(layer.getArgument(w.argument).getType());
      std::optional<int64_t> count =
          checkedProduct(packedType(type, w.tileCols).getShape());
      return count && fitsInBuffer(*count, type.getElementTypeBitWidth() / 8);
    });
  }

  /// The arguments of `layer` read only as expert MLP weights, each by
  /// kernels of one panel width.
  static SmallVector<PackedWeight>
  findPackableWeights(func::FuncOp layer, const CPUKernelConfig &config) {
    DenseMap<Value, int64_t> widths;
    auto note = [&](Value w, int64_t tileCols) {
      auto arg = dyn_cast_or_null<BlockArgument>(w);
      if (!arg || arg.getOwner() != &layer.getBody().front())
        return;
      auto [it, inserted] = widths.try_emplace(w, tileCols);
      if (!inserted && it->second != tileCols)
        it->second = -1; // read by kernels of two widths: keep as is
    };
    auto noteMLP = [&](Value w1, Value w2, Value w3) {
      int64_t hiddenCols = cpu::packedPanelColumns(config, w3 ? 2 : 1);
      note(w1, hiddenCols);
      note(w3, hiddenCols);
      note(w2, cpu::packedPanelColumns(config, 1));
    };
    layer.walk([&](Operation *op) {
      if (auto ffn = dyn_cast<ExpertFFNOp>(op))
        noteMLP(ffn.getW1(), ffn.getW2(), ffn.getW3());
      else if (auto shared = dyn_cast<SharedExpertOp>(op))
        noteMLP(shared.getW1(), shared.getW2(), shared.getW3());
    });

    SmallVector<PackedWeight> weights;
    for (BlockArgument arg : layer.getArguments()) {
      auto it = widths.find(arg);
      if (it == widths.end() || it->second < 0)
        continue;
      // Every use must be one of the MLP weight operands noted above.
      bool onlyWeights = llvm::all_of(arg.getUses(), [&](OpOperand &use) {
        Operation *user = use.getOwner();
        if (auto ffn = dyn_cast<ExpertFFNOp>(user))
          return use.get() != ffn.getRows() && use.get() != ffn.getOffsets() &&
                 use.get() != ffn.getInit();
        if (auto shared = dyn_cast<SharedExpertOp>(user))
          return use.get() != shared.getInput() &&
                 use.get() != shared.getInit() &&
                 use.get() != shared.getGate();
        return false;
      });
      if (onlyWeights)
        weights.push_back({arg.getArgNumber(), it->second});
    }
    return weights;
  }

  static std::string argumentName(func::FuncOp layer, unsigned i) {
    if (auto name = layer.getArgAttrOfType<StringAttr>(i, kNameAttr))
      return name.str();
    return "arg" + std::to_string(i);
  }

  /// @L_pack_weights(w...) -> (w_packed...).
  static void buildPackFunction(func::FuncOp layer,
                                ArrayRef<PackedWeight> weights,
                                SymbolTable &symbols) {
    MLIRContext *ctx = layer.getContext();
    Location loc = layer.getLoc();
    SmallVector<Type> inputs, results;
    for (const PackedWeight &w : weights) {
      auto type = cast<RankedTensorType>(
          layer.getArgument(w.argument).getType());
      inputs.push_back(type);
      results.push_back(packedType(type, w.tileCols));
    }
    OpBuilder b(ctx);
    b.setInsertionPointAfter(layer);
    auto fn = func::FuncOp::create(
        b, loc, (layer.getSymName() + "__pack").str(),
        FunctionType::get(ctx, inputs, results));
    symbols.insert(fn); // renames on collision
    markLayerVariant(fn, layer, "pack_weights");
    Block *body = fn.addEntryBlock();
    b.setInsertionPointToStart(body);
    SmallVector<Value> packed;
    for (auto [i, w] : llvm::enumerate(weights)) {
      std::string name = argumentName(layer, w.argument);
      fn.setArgAttr(i, kNameAttr, StringAttr::get(ctx, name));
      fn.setResultAttr(i, kNameAttr, StringAttr::get(ctx, name + "_packed"));
      auto resultType = cast<RankedTensorType>(results[i]);
      Value dest = tensor::EmptyOp::create(b, loc, resultType.getShape(),
                                           resultType.getElementType());
      Value zero = arith::ConstantOp::create(
          b, loc, b.getZeroAttr(resultType.getElementType()));
      int64_t rank = cast<RankedTensorType>(inputs[i]).getRank();
      packed.push_back(linalg::PackOp::create(
          b, loc, body->getArgument(i), dest, {rank - 2},
          {b.getIndexAttr(w.tileCols)}, zero));
    }
    func::ReturnOp::create(b, loc, packed);
  }

  /// @L_packed: @L on packed weights, unpacked on entry.
  static void buildPackedLayer(func::FuncOp layer,
                               ArrayRef<PackedWeight> weights,
                               SymbolTable &symbols) {
    MLIRContext *ctx = layer.getContext();
    Location loc = layer.getLoc();
    OpBuilder b(ctx);
    b.setInsertionPointAfter(layer);
    auto fn = cast<func::FuncOp>(b.clone(*layer));
    fn.setSymName((layer.getSymName() + "__packed").str());
    symbols.insert(fn);
    markLayerVariant(fn, layer, "packed_forward");
    Block &entry = fn.getBody().front();
    b.setInsertionPointToStart(&entry);
    SmallVector<Type> argTypes(fn.getArgumentTypes());
    for (const PackedWeight &w : weights) {
      BlockArgument arg = entry.getArgument(w.argument);
      auto type = cast<RankedTensorType>(arg.getType());
      arg.setType(packedType(type, w.tileCols));
      argTypes[w.argument] = arg.getType();
      Value dest = tensor::EmptyOp::create(b, loc, type.getShape(),
                                           type.getElementType());
      auto unpack = linalg::UnPackOp::create(
          b, loc, arg, dest, {type.getRank() - 2},
          {b.getIndexAttr(w.tileCols)});
      arg.replaceAllUsesExcept(unpack.getResult(), unpack);
      fn.setArgAttr(w.argument, kNameAttr,
                    StringAttr::get(ctx, argumentName(layer, w.argument) +
                                             "_packed"));
    }
    fn.setFunctionType(
        FunctionType::get(ctx, argTypes, fn.getResultTypes()));
  }
};
} // namespace
