//===- LayerSpec.h - the YAML/JSON layer spec and its parser ----*- C++ -*-===//

#ifndef MOE_FRONTEND_LAYERSPEC_H
#define MOE_FRONTEND_LAYERSPEC_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/Support/LLVM.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"

#include <functional>
#include <optional>
#include <string>

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace mlir::moe {

/// The layer families of DESIGN.md; the spellings are the `kind` values.
enum class LayerKind : uint32_t { moe, peer, pkm, mh_moe };

/// Element type of the weight matrices (activations are always f32).
enum class WeightType : uint32_t { f32, bf16, f16 };

/// Spellings used in specs and diagnostics; empty for out-of-range values so
/// that generic code can enumerate the cases like the dialect's enums.
/// Where a clamped SwiGLU clamps its gate branch: on the projection
/// (GPT-OSS, MiniMax-M3, GLM5-Next, HY-V4) or on the activation (Step3.7).
enum class SwiGLUClamp : uint32_t { before_activation, after_activation };

StringRef stringifyEnum(LayerKind kind);
StringRef stringifyEnum(WeightType type);
StringRef stringifyEnum(SwiGLUClamp clamp);

struct RouterSpec {
  int64_t topK = 0;
  ScoreFunction score = ScoreFunction::softmax;
  RoutingOrder order = RoutingOrder::score_then_topk;
  bool normalize = false;
  double scaling = 1.0;
  bool selectionBias = false;
  /// GPT-OSS: an f32 `[E]` bias added to the logits themselves (weight
  /// `logit_bias`), unlike `selectionBias`, which only steers the choice.
  bool logitBias = false;
  /// Laguna: `softcap · tanh(logits / softcap)` on the logits; absent: none.
  std::optional<double> softcap;
  /// Gemma 4: RMSNorm of the router's input (weight `router_norm`); the
  /// experts still see the input as it is.
  /// Llama 4: the weights scale each expert's input (`x · w`) and the
  /// expert outputs are summed unweighted; default: they scale the outputs.
  bool scoreOnInput = false;
  bool rmsNorm = false;
  double rmsNormEps = 1e-6;
  int64_t groups = 1;
  int64_t topkGroups = 1;
  GroupScore groupScore = GroupScore::max;
  bool noise = false;
  /// PhiMoE's sparsemixer: the relative distance to the pick within which
  /// experts share its weight is 2·jitterEps (score sparsemixer only).
  double jitterEps = 0.01;
  /// DeepSeek-V4 hash routing: the experts of a token are the row of the i32
  /// weight `tid2eid [hashVocab, top_k]` its id (the `token_ids` input)
  /// selects; 0: chosen by the scores.
  int64_t hashVocab = 0;
};

struct SharedExpertsSpec {
  /// Width of the always-on MLP; 0 means the layer has no shared experts.
  int64_t hidden = 0;
  bool gate = false;
};

/// The spec's `swiglu` options (activation swiglu only).
struct SwiGLUSpec {
  std::optional<double> limit;
  double alpha = 1.0;
  double upOffset = 0.0;
  SwiGLUClamp clamp = SwiGLUClamp::before_activation;
};

struct CapacitySpec {
  /// Exactly one of the three: slots per expert `ceil(factor · T · k / E)`,
  /// a fixed `tokens` (Switch's `expert_capacity`) or `ceil(tokenFraction ·
  /// T)` (NLLB-MoE's eval capacity); all clamped to `T · k`.
  std::optional<double> factor;
  std::optional<int64_t> tokens;
  std::optional<double> tokenFraction;
  OverflowPolicy overflow = OverflowPolicy::drop;
  DispatchPriority priority = DispatchPriority::token_order;
  /// NLLB-MoE: each token's kept weights divided by their sum after drops.
  bool renormalize = false;
};

/// Where a field of the spec was written, for locations of the built IR.
struct SpecLocation {
  unsigned line = 0;
  unsigned column = 0;
};

/// An entry of the spec's `tiles`: a tile option of the lowering pipeline,
/// set as `name=value` would set it in `moe-compile --tiles`.
struct TileOptionSpec {
  std::string name;
  /// The scalar as written (an integer's digits, or the string).
  std::string value;
};

/// The tile options a spec may set. The driver that owns the pipeline options
/// provides them; the front end checks `tiles` against them.
struct TileOptionTable {
  struct Option {
    std::string name;
    /// Integer options take an integer >= 0 (0: the target's default),
    /// written unquoted; the others take any scalar, as a string.
    bool integer = false;
  };
  SmallVector<Option> options;
  /// What is wrong with `value` (of the option's type) for the option `name`,
  /// "" when nothing is.
  std::function<std::string(StringRef name, StringRef value)> checkValue;
};

/// A validated layer: every field holds its value or its documented default
/// (docs/spec.md), and every size constraint of the layer kind holds.
struct LayerSpec {
  std::string name;
  LayerKind kind = LayerKind::moe;
  int64_t dModel = 0;
  int64_t experts = 0;
  WeightType weightType = WeightType::f32;

  // moe, mh_moe; `activation` is shared with peer.
  int64_t expertHidden = 0;
  Activation activation = Activation::swiglu;
  /// Set when the spec has a `swiglu` mapping.
  std::optional<SwiGLUSpec> swiglu;
  /// f32 biases b1 (b3), b2 on the routed experts' projections.
  bool expertBias = false;
  /// An f32 scale per routed expert on its output (Gemma 4).
  bool expertScale = false;
  /// An f32 bias [d_model] on the layer's output (JetMoE).
  bool outputBias = false;
  /// Gemma 4: an RMSNorm (weight `expert_norm`) of the experts' input, apart
  /// from the router's (`router.rms_norm`): routed and shared experts read
  /// the normalised tokens, the router the tokens as they are.
  bool expertRmsNorm = false;
  double expertRmsNormEps = 1e-6;
  RouterSpec router;
  SharedExpertsSpec sharedExperts;
  std::optional<CapacitySpec> capacity;
  /// In canonical order (load_balance, importance, z_loss), without repeats.
  SmallVector<AuxLossKind> auxLosses;

  // peer, pkm, mh_moe.
  int64_t heads = 1;

  // peer, pkm.
  int64_t topK = 0;
  int64_t keyDim = 0;
  ScoreFunction score = ScoreFunction::softmax;
  bool queryBatchNorm = false;
  /// LayerNorm over each token's h·d_k query channels (lucidrains' PKM).
  bool queryLayerNorm = false;
  /// A sub-key table pair per head ([h, n, d_k/2]) instead of one shared.
  bool keysPerHead = false;

  /// Tile options of the lowering, in spec order (names are unique); the
  /// command line's `--tiles` goes on top of them.
  SmallVector<TileOptionSpec> tiles;

  /// Name of the spec buffer and the position of every key that was written,
  /// by dotted path (`router.top_k`, `aux_losses`); empty for specs built in
  /// code.
  std::string sourceName;
  llvm::StringMap<SpecLocation> fieldLocations;

  bool isProductKey() const {
    return kind == LayerKind::peer || kind == LayerKind::pkm;
  }
  bool isRouted() const {
    return kind == LayerKind::moe || kind == LayerKind::mh_moe;
  }
  bool hasSharedExperts() const { return sharedExperts.hidden > 0; }
  /// Sub-key count of a product-key layer (`experts = n * n`).
  int64_t numSubKeys() const;
  /// Width of the tokens the routed experts see (`d_model / heads` for
  /// mh_moe).
  int64_t expertWidth() const {
    return kind == LayerKind::mh_moe ? dModel / heads : dModel;
  }
  /// Choices the router returns: `top_k`, or `min(2 top_k, A)` with `A` the
  /// experts of the kept groups when overflowing assignments fall back to the
  /// next-ranked experts.
  int64_t numRouterChoices() const;

  /// The location of `path`, else of its closest written parent, else none.
  std::optional<SpecLocation> locationOf(StringRef path) const;
};

/// Parses and validates the layer spec (YAML, or JSON as flow YAML) in buffer
/// `bufferId` of `sourceMgr` (by default its main file). Every problem is
/// reported through `sourceMgr` at the offending node as
/// `file:line:col: error: message`; returns failure if there was any.
/// `tileOptions` are the names and checks of the `tiles` entries; without
/// them, any name is accepted and the values are only checked to be scalars.
FailureOr<LayerSpec>
parseLayerSpec(llvm::SourceMgr &sourceMgr, unsigned bufferId = 0,
               const TileOptionTable *tileOptions = nullptr);

} // namespace mlir::moe

#endif // MOE_FRONTEND_LAYERSPEC_H
