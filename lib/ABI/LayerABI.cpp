//===- LayerABI.cpp - reading a layer function's C calling convention -----===//

#include "moe/ABI/LayerABI.h"

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
  return success();
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
    ABIBuffer buffer{nameOf(attrs, "arg", i),
                     i == 0 && !packing ? ABIBuffer::Role::Input
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
  return abi;
}
