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

static llvm::json::Array describeBuffers(ArrayRef<ABIBuffer> buffers) {
  llvm::json::Array array;
  for (const ABIBuffer &b : buffers)
    array.push_back(describeBuffer(b));
  return array;
}

std::string mlir::moe::emitABIDescription(ArrayRef<LayerABI> layers) {
  llvm::json::Array layerArray;
  for (const LayerABI &abi : layers) {
    if (abi.kind != LayerABI::Kind::Forward)
      continue;
    llvm::json::Object layer{
        {"name", abi.layerName},
        {"entry_point", abi.entryPointName()},
        {"d_model", abi.dModel},
        {"max_tokens", abi.maxTokens},
        {"seed", abi.seedArgument.has_value()},
        {"device", abi.cudaStream ? "cuda" : "cpu"},
        {"inputs", describeBuffers(abi.inputs)},
        {"outputs", describeBuffers(abi.outputs)},
    };
    // The packed-weights variant, when the layer has one: the packing
    // function, and the forward taking its outputs in place of its inputs.
    const LayerABI *packed = nullptr, *pack = nullptr, *route = nullptr;
    for (const LayerABI &other : layers) {
      if (other.layerName != abi.layerName)
        continue;
      if (other.kind == LayerABI::Kind::PackedForward)
        packed = &other;
      else if (other.kind == LayerABI::Kind::PackWeights)
        pack = &other;
      else if (other.kind == LayerABI::Kind::Route)
        route = &other;
    }
    if (packed && pack)
      layer["packed"] = llvm::json::Object{
          {"entry_point", packed->entryPointName()},
          {"max_tokens", packed->maxTokens},
          {"inputs", describeBuffers(packed->inputs)},
          {"pack_entry_point", pack->entryPointName()},
          {"pack_inputs", describeBuffers(pack->inputs)},
          {"pack_outputs", describeBuffers(pack->outputs)},
      };
    // The routing alone, when the layer has routing results.
    if (route)
      layer["route"] = llvm::json::Object{
          {"entry_point", route->entryPointName()},
          {"max_tokens", route->maxTokens},
          {"seed", route->seedArgument.has_value()},
          {"inputs", describeBuffers(route->inputs)},
          {"outputs", describeBuffers(route->outputs)},
      };
    layerArray.push_back(std::move(layer));
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv(
      "{0:2}", llvm::json::Value(llvm::json::Object{
                   {"abi_version", 1}, {"layers", std::move(layerArray)}}));
  os << "\n";
  return text;
}
