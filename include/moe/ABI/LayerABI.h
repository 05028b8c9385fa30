//===- LayerABI.h - the C calling convention of a compiled layer -*- C++ -*-===//
//
// A layer function (tensors in, tensors out, named by `moe.name` attributes)
// is exported as
//
//   int32_t <layer>_forward(int64_t tokens, int64_t d_model,
//                           <inputs and weights as pointers>, [uint64_t seed],
//                           <outputs as pointers>);
//
// Buffers are dense row-major. `out` is required; the other outputs may be
// NULL. Layers with pre-packable weights also export `<layer>_pack_weights`
// and `<layer>_forward_packed` (see LayerABI::Kind). The description below
// drives both the entry-point generator and the C header, so the two cannot
// disagree.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ABI_LAYERABI_H
#define MOE_ABI_LAYERABI_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"

#include <string>

namespace mlir::moe {

struct ABIBuffer {
  enum class Role { Input, Weight, Output };
  std::string name;
  Role role;
  RankedTensorType type;
  /// A dynamic dim 0 is `tokens * rowsPerToken`.
  int64_t rowsPerToken = 1;
  /// Outputs other than the first may be NULL.
  bool optional = false;

  /// The C element type: float, int32_t, or uint16_t for bf16/f16 bits.
  StringRef cElementType() const;
  /// "[tokens, 4096]" — the shape as the header documents it.
  std::string shapeString() const;
};

struct LayerABI {
  /// What the function computes: the layer, the layer on pre-packed weights,
  /// the packing of its weights (moe-pack-expert-weights), which takes no
  /// tokens: `int32_t <layer>_pack_weights(<weights>, <packed weights>)`, or
  /// its routing alone (moe-add-route-variant).
  enum class Kind { Forward, PackedForward, PackWeights, Route };
  Kind kind = Kind::Forward;
  /// The layer's name (for its variants: of the layer they serve).
  std::string layerName;
  /// The C function: `<layer>_forward`, `<layer>_forward_packed`,
  /// `<layer>_pack_weights` or `<layer>_route`.
  std::string entryPoint;
  /// Position of each buffer in the layer function's arguments or results.
  /// No inline storage: a layer has several of each, and LayerABIs are kept
  /// in SmallVectors themselves.
  SmallVector<ABIBuffer, 0> inputs;  // x and weights, in argument order
  SmallVector<ABIBuffer, 0> outputs; // in result order
  /// Argument index of the i64 seed of noisy routing, if any.
  std::optional<unsigned> seedArgument;
  int64_t dModel = 0;
  /// The most tokens one call may take (functions that take tokens): every
  /// per-token buffer and tensor of the function stays within
  /// kMaxBufferBytes, and every count the compiled code keeps in 32 bits
  /// (dispatch slots) within kMaxInt32Count (SizeLimits.h).
  int64_t maxTokens = 0;
  /// What bounds `maxTokens`, for the entry point's message ("the tensor of
  /// expert ids is 32-bit").
  std::string maxTokensReason;
  /// The CUDA target's entry point: every buffer is a device pointer and a
  /// `void *stream` (a CUstream; NULL: the default stream) follows the
  /// outputs. The call is asynchronous on that stream.
  bool cudaStream = false;

  std::string entryPointName() const { return entryPoint; }
  /// Whether the C function takes `tokens` and `d_model` (not packing).
  bool takesTokens() const { return kind != Kind::PackWeights; }
};

/// Reads the ABI of a layer function; fails with a diagnostic on functions
/// that cannot be exported (non-tensor operands, dynamic dims other than the
/// token dim, no `[tokens, d_model]` first argument, a buffer larger than
/// kMaxBufferBytes, or a tensor that cannot hold even one token's rows).
FailureOr<LayerABI> describeLayerABI(func::FuncOp layer);

/// The C header declaring the entry point of every layer in `layers`.
std::string emitCHeader(ArrayRef<LayerABI> layers, StringRef guardName);

/// The same ABI as JSON: per layer its entry point, d_model, max_tokens,
/// whether it takes a seed, and each input/output buffer's name, dtype, shape
/// (-1 for the token dim), rows_per_token and optionality; with a
/// packed-weights variant, a `packed` object: its entry point and inputs, and
/// the packing function's entry point, inputs and outputs; with a routing
/// variant, a `route` object: its entry point, inputs and outputs.
std::string emitABIDescription(ArrayRef<LayerABI> layers);

} // namespace mlir::moe

#endif // MOE_ABI_LAYERABI_H
