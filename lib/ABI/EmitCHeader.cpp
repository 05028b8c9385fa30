//===- EmitCHeader.cpp - the C header of compiled layers ------------------===//

#include "moe/ABI/LayerABI.h"

#include "moe/ABI/SizeLimits.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::moe;

static std::string upper(StringRef s) { return s.upper(); }

static StringRef typeName(const ABIBuffer &buffer) {
  Type t = buffer.type.getElementType();
  if (t.isBF16())
    return "bf16 bits";
  if (t.isF16())
    return "f16 bits";
  return t.isF32() ? "f32" : "i32";
}

/// The element count of a buffer as an exact 64-bit C expression: a
/// constant (`INT64_C(512)`), or for a per-token buffer the constant per
/// token times `tokens` (`((int64_t)(tokens) * INT64_C(4096))`). In plain
/// `int` arithmetic a product of three sizes of 65536 would wrap to 0.
/// describeLayerABI has checked that the static counts fit, and each
/// per-token count stays below 2^47 up to the layer's max tokens.
static std::string sizeExpression(const ABIBuffer &buffer) {
  SmallVector<int64_t> factors;
  for (int64_t d : buffer.type.getShape())
    factors.push_back(ShapedType::isDynamic(d) ? buffer.rowsPerToken : d);
  std::optional<int64_t> count = checkedProduct(factors);
  assert(count && "describeLayerABI checks that buffer sizes fit in int64");
  std::string constant = "INT64_C(" + std::to_string(*count) + ")";
  if (buffer.type.hasStaticShape())
    return constant;
  return "((int64_t)(tokens) * " + constant + ")";
}

/// ` /* 8 x 128 x 64 */`: the dims behind a size, where there are several.
static std::string sizeComment(const ABIBuffer &buffer) {
  if (buffer.type.getRank() < 2 && buffer.rowsPerToken == 1)
    return "";
  SmallVector<std::string> dims;
  for (int64_t d : buffer.type.getShape()) {
    if (!ShapedType::isDynamic(d))
      dims.push_back(std::to_string(d));
    else if (buffer.rowsPerToken == 1)
      dims.push_back("tokens");
    else
      dims.push_back("tokens x " + std::to_string(buffer.rowsPerToken));
  }
  return " /* " + llvm::join(dims, " x ") + " */";
}

/// What the function of `abi` does, for its comment.
static std::string describeFunction(const LayerABI &abi) {
  switch (abi.kind) {
  case LayerABI::Kind::Forward:
    return "Runs layer " + abi.layerName + " on `tokens` rows.";
  case LayerABI::Kind::PackedForward:
    return "Runs layer " + abi.layerName + " on `tokens` rows, its expert "
           "weights pre-packed\n * by " + abi.layerName +
           "_pack_weights (the *_packed buffers): the same outputs\n * as " +
           abi.layerName + "_forward with expert-kernel=panel, bit for bit, "
           "faster.";
  case LayerABI::Kind::Route:
    return "The routing of layer " + abi.layerName + " alone (the same bits as " +
           abi.layerName + "_forward's\n * topk_ids and topk_weights), "
           "without running its experts.";
  case LayerABI::Kind::PackWeights:
    return "Packs the expert weights of layer " + abi.layerName +
           " into the layout of its\n * kernels, once, for " + abi.layerName +
           "_forward_packed (the layout follows the\n * compile options: "
           "repack after recompiling).";
  }
  llvm_unreachable("unknown layer ABI kind");
}

static void emitLayer(raw_ostream &os, const LayerABI &abi,
                      llvm::StringSet<> &macros) {
  std::string macro = upper(abi.layerName);
  auto define = [&](const std::string &name, const std::string &rest) {
    // The variants of a layer share most buffers with it.
    if (macros.insert(name).second)
      os << "#define " << name << rest << "\n";
  };
  if (abi.kind == LayerABI::Kind::Forward) {
    os << "/* ---- layer " << abi.layerName << " ---- */\n\n";
    define(macro + "_D_MODEL", " " + std::to_string(abi.dModel));
    // Past it the entry point returns MOE_ERROR_BAD_SIZE.
    define(macro + "_MAX_TOKENS",
           " INT64_C(" + std::to_string(abi.maxTokens) + ")");
  }
  auto emitSize = [&](const ABIBuffer &buffer) {
    bool perToken = !buffer.type.hasStaticShape();
    define(macro + "_" + upper(buffer.name) + "_SIZE",
           (perToken ? "(tokens) " : " ") + sizeExpression(buffer) +
               sizeComment(buffer));
  };
  for (const ABIBuffer &b : abi.inputs)
    emitSize(b);
  for (const ABIBuffer &b : abi.outputs)
    emitSize(b);

  if (abi.kind == LayerABI::Kind::Forward)
    os << "\n";
  os << "/* " << describeFunction(abi)
     << " Buffers are dense,\n * row-major, PyTorch [out, in] layout for "
        "weights; element counts are the\n * _SIZE macros."
     << " Returns MOE_OK, or a moe_status with moe_last_error()\n * saying "
        "why.\n *\n";
  auto doc = [&](StringRef name, StringRef type, StringRef what) {
    os << llvm::formatv(" *   {0,-16} {1,-17} {2}\n", name, type, what);
  };
  if (abi.takesTokens()) {
    doc("tokens", "int64_t",
        "in [1, " + std::to_string(abi.maxTokens) + "]" +
            (abi.kind == LayerABI::Kind::Forward ? " (" + macro + "_MAX_TOKENS)"
                                                 : std::string()));
    doc("d_model", "int64_t", "must be " + std::to_string(abi.dModel));
  }
  auto docBuffer = [&](const ABIBuffer &b, bool isConst) {
    std::string type = (isConst ? "const " : "") + b.cElementType().str() + "*";
    std::string what = b.shapeString() + " " + typeName(b).str();
    if (b.optional)
      what += ", optional (NULL skips it)";
    doc(b.name, type, what);
  };
  for (const ABIBuffer &b : abi.inputs)
    docBuffer(b, /*isConst=*/true);
  if (abi.seedArgument)
    doc("seed", "uint64_t", "noisy-gating seed (same seed, same output)");
  for (const ABIBuffer &b : abi.outputs)
    docBuffer(b, /*isConst=*/false);
  if (abi.cudaStream)
    doc("stream", "void*", "CUstream the kernels run on (NULL: the default "
        "stream);\n *" + std::string(35, ' ') + "buffers are device memory, the "
        "call is asynchronous");
  os << " */\n";

  os << "int32_t " << abi.entryPointName() << "(";
  llvm::ListSeparator separator(",\n    ");
  if (abi.takesTokens())
    os << separator << "int64_t tokens, int64_t d_model";
  for (const ABIBuffer &b : abi.inputs)
    os << separator << "const " << b.cElementType() << " *" << b.name;
  if (abi.seedArgument)
    os << separator << "uint64_t seed";
  for (const ABIBuffer &b : abi.outputs)
    os << separator << b.cElementType() << " *" << b.name;
  if (abi.cudaStream)
    os << separator << "void *stream";
  os << ");\n\n";
}

std::string mlir::moe::emitCHeader(ArrayRef<LayerABI> layers,
                                   StringRef guardName) {
  std::string text;
  llvm::raw_string_ostream os(text);
  std::string guard = upper(guardName) + "_H";
  os << "/* Generated by moe-compile: the C ABI of compiled MoE layers. Do not "
        "edit. */\n\n"
     << "#ifndef " << guard << "\n#define " << guard << "\n\n"
     << "#include <stdint.h>\n\n#include \"moe-c/moe_runtime.h\"\n\n"
     << "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n";
  llvm::StringSet<> macros;
  for (const LayerABI &abi : layers)
    emitLayer(os, abi, macros);
  os << "#ifdef __cplusplus\n}\n#endif\n\n#endif /* " << guard << " */\n";
  return text;
}
