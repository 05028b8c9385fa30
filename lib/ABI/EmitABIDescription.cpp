//===- EmitABIDescription.cpp - the C ABI of compiled layers as JSON ------===//
//
// Bindings (the Python package, other languages) read this instead of
// re-deriving the argument order from the spec.
//
//===----------------------------------------------------------------------===//

#include "moe/ABI/LayerABI.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::moe;

static StringRef dtypeName(Type t) {
  if (t.isF32())
    return "f32";
  if (t.isBF16())
    return "bf16";
  if (t.isF16())
    return "f16";
  return "i32";
}

static llvm::json::Object describeBuffer(const ABIBuffer &buffer) {
  llvm::json::Array shape;
  for (int64_t d : buffer.type.getShape())
    shape.push_back(ShapedType::isDynamic(d) ? -1 : d);
  return llvm::json::Object{
      {"name", buffer.name},
      {"dtype", dtypeName(buffer.type.getElementType())},
      {"shape", std::move(shape)},
      {"rows_per_token", buffer.rowsPerToken},
      {"optional", buffer.optional},
  };
}

std::string mlir::moe::emitABIDescription(ArrayRef<LayerABI> layers) {
  llvm::json::Array layerArray;
  for (const LayerABI &abi : layers) {
    llvm::json::Array inputs, outputs;
    for (const ABIBuffer &b : abi.inputs)
      inputs.push_back(describeBuffer(b));
    for (const ABIBuffer &b : abi.outputs)
      outputs.push_back(describeBuffer(b));
    layerArray.push_back(llvm::json::Object{
        {"name", abi.layerName},
        {"entry_point", abi.entryPointName()},
        {"d_model", abi.dModel},
        {"seed", abi.seedArgument.has_value()},
        {"inputs", std::move(inputs)},
        {"outputs", std::move(outputs)},
    });
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv(
      "{0:2}", llvm::json::Value(llvm::json::Object{
                   {"abi_version", 1}, {"layers", std::move(layerArray)}}));
  os << "\n";
  return text;
}
