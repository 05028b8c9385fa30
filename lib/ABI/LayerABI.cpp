//===- LayerABI.cpp - reading a layer function's C calling convention -----===//

#include "moe/ABI/LayerABI.h"

#include "moe/ABI/SizeLimits.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Interfaces/DestinationStyleOpInterface.h"
#include "llvm/ADT/StringExtras.h"

using namespace mlir;
using namespace mlir::moe;

StringRef ABIBuffer::cElementType() const {
  Type t = type.getElementType();
  if (t.isF32())
    return "float";
  if (t.isInteger(32))
    return "int32_t";
  return "uint16_t"; // bf16 and f16 travel as their bit patterns.
}

std::string ABIBuffer::shapeString() const {
  if (type.getRank() == 0)
    return "scalar";
  SmallVector<std::string> dims;
  for (int64_t d : type.getShape()) {
    if (!ShapedType::isDynamic(d))
      dims.push_back(std::to_string(d));
    else if (rowsPerToken == 1)
      dims.push_back("tokens");
    else
      dims.push_back("tokens * " + std::to_string(rowsPerToken));
  }
  return "[" + llvm::join(dims, ", ") + "]";
}

static std::string nameOf(DictionaryAttr attrs, StringRef fallback,
                          unsigned index) {
  if (attrs)
    if (auto name = attrs.getAs<StringAttr>(kNameAttr))
      return name.str();
  return (fallback + Twine(index)).str();
}

/// Bytes of one element as the compiled code stores it (index: 64 bits).
static int64_t elementBytes(Type type) {
  if (!type.isIntOrFloat())
    return 8;
  return std::max<int64_t>(1,
                           llvm::divideCeil(type.getIntOrFloatBitWidth(), 8));
}

static LogicalResult checkBuffer(func::FuncOp layer, const ABIBuffer &buffer) {
  ArrayRef<int64_t> shape = buffer.type.getShape();
  for (auto [i, d] : llvm::enumerate(shape))
    if (ShapedType::isDynamic(d) && i != 0)
      return layer.emitError() << "cannot export '" << buffer.name
                               << "': only dim 0 (tokens) may be dynamic, got "
                               << buffer.type;
  Type t = buffer.type.getElementType();
  if (!t.isF32() && !t.isBF16() && !t.isF16() && !t.isInteger(32))
    return layer.emitError() << "cannot export '" << buffer.name
                             << "': element type " << t
                             << " has no C ABI (f32, bf16, f16, i32)";
  // Per-token buffers are bounded through the layer's max tokens.
  if (buffer.type.hasStaticShape() &&
      !fitsInBuffer(buffer.type.getNumElements(), elementBytes(t)))
    return layer.emitError()
           << "cannot export '" << buffer.name << "': " << buffer.type
           << " needs more than " << kMaxBufferBytes
           << " bytes (2^47, the address space a buffer may span)";
  return success();
}

namespace {
/// The most tokens one call of a layer function may take, and why.
struct TokenLimit {
  int64_t maxTokens = kMaxBufferBytes;
  std::string reason = "the address space a buffer may span";

  void bound(int64_t tokens, const Twine &why) {
    if (tokens < maxTokens) {
      maxTokens = tokens;
      reason = why.str();
    }
  }
};
} // namespace

/// Elements of one dim-0 row of `type`, none if another dim is dynamic or the
/// product overflows.
static std::optional<int64_t> rowElements(RankedTensorType type) {
  ArrayRef<int64_t> inner = type.getShape().drop_front();
  if (llvm::any_of(inner, ShapedType::isDynamic))
    return std::nullopt;
  return checkedProduct(inner);
}

/// Bounds `limit` by every tensor of `layer` whose dim 0 grows with the
/// tokens (its bytes stay within kMaxBufferBytes) and by the dispatch slots
/// the compiled code counts in i32. Rows per token follow the values: 1 for
/// the arguments, times `heads` through token_split, times the choices per
/// row through dispatch_plan's slots; a destination-style op has the rows of
/// its init, tensor.dim and tensor.empty those of the tensor they measure,
/// any other op the most of its operands'. Fails, at the op's location (the
/// spec field it was built for), where not even one token fits.
static LogicalResult boundByTensors(func::FuncOp layer, TokenLimit &limit) {
  DenseMap<Value, int64_t> rowsPerToken;
  auto rowsOf = [&](Value v) -> std::optional<int64_t> {
    auto it = rowsPerToken.find(v);
    if (it == rowsPerToken.end())
      return std::nullopt;
    return it->second;
  };
  auto hasTokenDim = [](Type type) {
    auto tensor = dyn_cast<RankedTensorType>(type);
    return tensor && tensor.getRank() > 0 && tensor.isDynamicDim(0);
  };
  for (BlockArgument arg : layer.getArguments())
    if (hasTokenDim(arg.getType()))
      rowsPerToken[arg] = 1;
  // Rows of a value the rules above cannot follow: the most seen so far.
  int64_t mostRows = 1;

  auto boundBy = [&](Operation *op, RankedTensorType type,
                     int64_t rows) -> LogicalResult {
    std::optional<int64_t> elements = rowElements(type);
    if (!elements)
      return success();
    std::optional<int64_t> perToken =
        checkedProduct({rows, *elements, elementBytes(type.getElementType())});
    int64_t tokens = perToken ? maxTokensWithin(kMaxBufferBytes, *perToken) : 0;
    if (tokens == 0)
      return op->emitError()
             << "cannot run one token: a " << type << " with " << rows
             << " row(s) per token needs more than " << kMaxBufferBytes
             << " bytes (2^47, the address space a buffer may span)";
    limit.bound(tokens, "its " + Twine(*perToken) +
                            " bytes per token of one tensor must stay within "
                            "2^47 bytes");
    return success();
  };

  WalkResult walk = layer.walk([&](Operation *op) -> WalkResult {
    if (auto plan = dyn_cast<DispatchPlanOp>(op)) {
      // Counts, offsets and slot row ids are i32: every slot must be
      // countable.
      auto idsType = cast<RankedTensorType>(plan.getIds().getType());
      std::optional<int64_t> rows = rowsOf(plan.getIds());
      if (rows && !idsType.isDynamicDim(1)) {
        int64_t choices = idsType.getDimSize(1);
        std::optional<int64_t> slots = checkedMul(*rows, choices);
        int64_t tokens = slots ? maxTokensWithin(kMaxInt32Count, *slots) : 0;
        if (tokens == 0)
          return plan.emitError()
                 << "cannot run one token: its " << *rows << " x " << choices
                 << " dispatch slots per token exceed " << kMaxInt32Count
                 << ", the most the 32-bit counts and offsets hold";
        limit.bound(tokens, "its tokens x " + Twine(*slots) +
                                " dispatch slots are counted in 32 bits");
      }
    }
    // Noisy routing numbers its rows in the 32-bit Philox counter
    // (docs/semantics.md, section 5): rows past 2^32 would repeat noise.
    if (auto route = dyn_cast<RouteOp>(op)) {
      std::optional<int64_t> rows = rowsOf(route.getLogits());
      if (route.getSeed() && rows) {
        int64_t tokens = maxTokensWithin(int64_t(1) << 32, *rows);
        if (tokens == 0)
          return route.emitError()
                 << "cannot run one token: its " << *rows
                 << " noisy rows per token exceed the 2^32 rows the 32-bit "
                    "noise counter numbers";
        limit.bound(tokens, "its tokens x " + Twine(*rows) +
                                " noisy rows are numbered by a 32-bit "
                                "counter");
      }
    }
    // The expert MLPs keep f32 hidden rows, [rows, F], that no tensor of the
    // function shows.
    auto boundHidden = [&](Value rowsValue, Value w1, int64_t hiddenDim) {
      auto w1Type = cast<RankedTensorType>(w1.getType());
      std::optional<int64_t> rows = rowsOf(rowsValue);
      if (!rows || w1Type.getRank() <= hiddenDim ||
          w1Type.isDynamicDim(hiddenDim))
        return success();
      auto hidden = RankedTensorType::get(
          {ShapedType::kDynamic, w1Type.getDimSize(hiddenDim)},
          Float32Type::get(op->getContext()));
      return boundBy(op, hidden, *rows);
    };
    if (auto ffn = dyn_cast<ExpertFFNOp>(op))
      if (failed(boundHidden(ffn.getRows(), ffn.getW1(), 1)))
        return WalkResult::interrupt();
    if (auto shared = dyn_cast<SharedExpertOp>(op))
      if (failed(boundHidden(shared.getInput(), shared.getW1(), 0)))
        return WalkResult::interrupt();
    // Product-key retrieval ranks min(top_k, n)^2 candidates per head.
    if (auto retrieval = dyn_cast<ProductKeyTopKOp>(op)) {
      auto keysType = cast<RankedTensorType>(retrieval.getKeys1().getType());
      std::optional<int64_t> rows = rowsOf(retrieval.getQuery());
      if (rows && !keysType.isDynamicDim(0)) {
        int64_t kept =
            std::min<int64_t>(retrieval.getTopK(), keysType.getDimSize(0));
        std::optional<int64_t> candidates = checkedMul(kept, kept);
        std::optional<int64_t> headRows =
            checkedMul(*rows, int64_t(retrieval.getHeads()));
        auto type = RankedTensorType::get(
            {ShapedType::kDynamic,
             candidates.value_or(std::numeric_limits<int64_t>::max())},
            Float32Type::get(op->getContext()));
        if (failed(boundBy(
                op, type,
                headRows.value_or(std::numeric_limits<int64_t>::max()))))
          return WalkResult::interrupt();
      }
    }

    for (OpResult result : op->getResults()) {
      // Rows that the multiplications below would overflow stand for more
      // than any buffer holds.
      constexpr int64_t kOverflow = std::numeric_limits<int64_t>::max();
      auto times = [&](int64_t a, int64_t b) {
        return checkedMul(a, b).value_or(kOverflow);
      };
      std::optional<int64_t> rows;
      if (auto split = dyn_cast<TokenSplitOp>(op)) {
        if (std::optional<int64_t> in = rowsOf(split.getInput()))
          rows = times(*in, int64_t(split.getHeads()));
      } else if (auto merge = dyn_cast<TokenMergeOp>(op)) {
        if (std::optional<int64_t> in = rowsOf(merge.getInput()))
          rows = llvm::divideCeil(*in, int64_t(merge.getHeads()));
      } else if (auto plan = dyn_cast<DispatchPlanOp>(op)) {
        auto idsType = cast<RankedTensorType>(plan.getIds().getType());
        std::optional<int64_t> in = rowsOf(plan.getIds());
        if (in && !idsType.isDynamicDim(1) &&
            (result == plan.getTokenIds() || result == plan.getSlotWeights()))
          rows = times(*in, idsType.getDimSize(1));
      } else if (auto dps = dyn_cast<DestinationStyleOpInterface>(op)) {
        if (OpOperand *init = dps.getTiedOpOperand(result))
          rows = rowsOf(init->get());
      } else if (auto dim = dyn_cast<tensor::DimOp>(op)) {
        if (getConstantIntValue(dim.getIndex()) == 0)
          rows = rowsOf(dim.getSource());
      } else {
        for (Value operand : op->getOperands())
          if (std::optional<int64_t> in = rowsOf(operand))
            rows = std::max(rows.value_or(0), *in);
      }
      bool perToken = hasTokenDim(result.getType());
      if (!rows && !perToken)
        continue;
      int64_t known = rows.value_or(mostRows);
      rowsPerToken[result] = known;
      mostRows = std::max(mostRows, known);
      if (perToken &&
          failed(boundBy(op, cast<RankedTensorType>(result.getType()), known)))
        return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(walk.wasInterrupted());
}

/// The kind, layer name and C name of `layer` from its variant attributes.
static LogicalResult describeVariant(func::FuncOp layer, LayerABI &abi) {
  abi.layerName = layer.getSymName().str();
  abi.entryPoint = abi.layerName + "_forward";
  auto variant = layer->getAttrOfType<StringAttr>(kVariantAttr);
  if (!variant)
    return success();
  auto of = layer->getAttrOfType<StringAttr>(kLayerAttr);
  if (!of)
    return layer.emitError() << "a layer variant needs a '" << kLayerAttr
                             << "' string attribute";
  abi.layerName = of.str();
  if (variant.getValue() == "packed_forward") {
    abi.kind = LayerABI::Kind::PackedForward;
    abi.entryPoint = abi.layerName + "_forward_packed";
  } else if (variant.getValue() == "pack_weights") {
    abi.kind = LayerABI::Kind::PackWeights;
    abi.entryPoint = abi.layerName + "_pack_weights";
  } else if (variant.getValue() == "route") {
    abi.kind = LayerABI::Kind::Route;
    abi.entryPoint = abi.layerName + "_route";
  } else {
    return layer.emitError() << "unknown layer variant " << variant
                             << " (expected packed_forward, pack_weights or "
                                "route)";
  }
  return success();
}

FailureOr<LayerABI> mlir::moe::describeLayerABI(func::FuncOp layer) {
  LayerABI abi;
  if (failed(describeVariant(layer, abi)))
    return failure();
  FunctionType fnType = layer.getFunctionType();
  bool packing = abi.kind == LayerABI::Kind::PackWeights;

  for (auto [i, type] : llvm::enumerate(fnType.getInputs())) {
    DictionaryAttr attrs = layer.getArgAttrDict(i);
    if (type.isInteger(64)) {
      if (abi.seedArgument)
        return layer.emitError("cannot export a layer with two i64 (seed) "
                               "arguments");
      abi.seedArgument = i;
      continue;
    }
    auto tensor = dyn_cast<RankedTensorType>(type);
    if (!tensor)
      return layer.emitError() << "cannot export argument #" << i << " of type "
                               << type << ": expected a ranked tensor or i64";
    // The tokens, and hash routing's token ids: per-token inputs.
    std::string name = nameOf(attrs, "arg", i);
    bool perToken = !packing && (i == 0 || name == "token_ids");
    ABIBuffer buffer{name,
                     perToken ? ABIBuffer::Role::Input
                              : ABIBuffer::Role::Weight,
                     tensor};
    if (failed(checkBuffer(layer, buffer)))
      return failure();
    if (packing && !tensor.hasStaticShape())
      return layer.emitError() << "cannot export '" << buffer.name
                               << "' of a weight-packing function: its shape "
                                  "must be static";
    abi.inputs.push_back(std::move(buffer));
  }
  if (packing) {
    if (abi.seedArgument || abi.inputs.empty())
      return layer.emitError("cannot export a weight-packing function that "
                             "takes a seed or no weights");
  } else {
    if (abi.inputs.empty() || abi.inputs.front().type.getRank() != 2 ||
        !abi.inputs.front().type.isDynamicDim(0) ||
        abi.inputs.front().type.isDynamicDim(1))
      return layer.emitError("cannot export: the first argument must be the "
                             "tokens `tensor<?xDxf32>`");
    abi.dModel = abi.inputs.front().type.getDimSize(1);
  }

  for (auto [i, type] : llvm::enumerate(fnType.getResults())) {
    auto tensor = dyn_cast<RankedTensorType>(type);
    if (!tensor)
      return layer.emitError() << "cannot export result #" << i << " of type "
                               << type << ": expected a ranked tensor";
    DictionaryAttr attrs = layer.getResultAttrDict(i);
    ABIBuffer buffer{nameOf(attrs, "result", i), ABIBuffer::Role::Output,
                     tensor};
    if (attrs)
      if (auto rows = attrs.getAs<IntegerAttr>(kRowsPerTokenAttr))
        buffer.rowsPerToken = rows.getInt();
    // Packing writes every packed weight; a layer only needs `out`.
    buffer.optional = i != 0 && !packing;
    if (failed(checkBuffer(layer, buffer)))
      return failure();
    if (packing && !tensor.hasStaticShape())
      return layer.emitError() << "cannot export '" << buffer.name
                               << "' of a weight-packing function: its shape "
                                  "must be static";
    abi.outputs.push_back(std::move(buffer));
  }
  if (abi.outputs.empty())
    return layer.emitError("cannot export a layer without results");
  if (!abi.takesTokens())
    return abi;

  TokenLimit limit;
  for (const ABIBuffer &buffer :
       llvm::concat<const ABIBuffer>(abi.inputs, abi.outputs)) {
    if (buffer.type.hasStaticShape())
      continue;
    std::optional<int64_t> perToken =
        checkedProduct({buffer.rowsPerToken, *rowElements(buffer.type),
                        elementBytes(buffer.type.getElementType())});
    int64_t tokens = perToken ? maxTokensWithin(kMaxBufferBytes, *perToken) : 0;
    if (tokens == 0)
      return layer.emitError()
             << "cannot export '" << buffer.name << "': one token's "
             << buffer.rowsPerToken << " row(s) of " << buffer.type
             << " need more than " << kMaxBufferBytes
             << " bytes (2^47, the address space a buffer may span)";
    limit.bound(tokens, "buffer '" + buffer.name + "' of " + Twine(*perToken) +
                            " bytes per token must stay within 2^47 bytes");
  }
  if (failed(boundByTensors(layer, limit)))
    return failure();
  abi.maxTokens = limit.maxTokens;
  abi.maxTokensReason = limit.reason;
  return abi;
}
