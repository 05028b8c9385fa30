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

FailureOr<LayerABI> mlir::moe::describeLayerABI(func::FuncOp layer) {
  LayerABI abi;
  abi.layerName = layer.getSymName().str();
  FunctionType fnType = layer.getFunctionType();

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
                     i == 0 ? ABIBuffer::Role::Input : ABIBuffer::Role::Weight,
                     tensor};
    if (failed(checkBuffer(layer, buffer)))
      return failure();
    abi.inputs.push_back(std::move(buffer));
  }
  if (abi.inputs.empty() || abi.inputs.front().type.getRank() != 2 ||
      !abi.inputs.front().type.isDynamicDim(0) ||
      abi.inputs.front().type.isDynamicDim(1))
    return layer.emitError("cannot export: the first argument must be the "
                           "tokens `tensor<?xDxf32>`");
  abi.dModel = abi.inputs.front().type.getDimSize(1);

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
    buffer.optional = i != 0;
    if (failed(checkBuffer(layer, buffer)))
      return failure();
    abi.outputs.push_back(std::move(buffer));
  }
  if (abi.outputs.empty())
    return layer.emitError("cannot export a layer without results");
  return abi;
}
