//===- MoEVerifiers.cpp - shape, type and attribute checks of moe ops -----===//
//
// Every message names what was expected and what was found, so a layer that
// the front end or a user wrote wrongly is diagnosed at its op.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/TypeUtilities.h"
#include "llvm/Support/Format.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::moe;

namespace {
/// A shaped operand or result with the name used in diagnostics.
struct Named {
  StringRef name;
  RankedTensorType type;
  Named(StringRef name, Value v)
      : name(name), type(cast<RankedTensorType>(v.getType())) {}
  int64_t dim(unsigned i) const { return type.getShape()[i]; }
  int64_t rank() const { return type.getRank(); }
};
} // namespace

static std::string dimStr(int64_t d) {
  return ShapedType::isDynamic(d) ? std::string("?") : std::to_string(d);
}

/// `-1.5`, `0.001`, `inf`, `nan`: short, and the same on every platform.
static std::string doubleStr(double v) {
  if (std::isnan(v))
    return "nan";
  if (std::isinf(v))
    return v < 0 ? "-inf" : "inf";
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::format("%g", v);
  return s;
}

/// `[?, 64]`: dynamic dims as `?`, not as the sentinel value.
static std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [i, d] : llvm::enumerate(shape))
    s += (i ? ", " : "") + dimStr(d);
  return s + "]";
}

static LogicalResult expectRank(Operation *op, const Named &v, int64_t rank) {
  if (v.rank() == rank)
    return success();
  return op->emitOpError() << "expects " << v.name << " of rank " << rank
                           << ", got rank " << v.rank();
}

/// Dims may be dynamic; two static ones must agree.
static LogicalResult expectDim(Operation *op, const Named &a, unsigned ad,
                               const Named &b, unsigned bd) {
  int64_t x = a.dim(ad), y = b.dim(bd);
  if (ShapedType::isDynamic(x) || ShapedType::isDynamic(y) || x == y)
    return success();
  return op->emitOpError() << "expects " << a.name << " dim " << ad << " ("
                           << x << ") to match " << b.name << " dim " << bd
                           << " (" << y << ")";
}

static LogicalResult expectDimEquals(Operation *op, const Named &a, unsigned ad,
                                     int64_t expected, StringRef what) {
  int64_t x = a.dim(ad);
  if (ShapedType::isDynamic(x) || x == expected)
    return success();
  return op->emitOpError() << "expects " << a.name << " dim " << ad << " ("
                           << x << ") to equal " << what << " (" << expected
                           << ")";
}

static LogicalResult expectStaticDim(Operation *op, const Named &a, unsigned ad,
                                     StringRef what) {
  if (!ShapedType::isDynamic(a.dim(ad)))
    return success();
  return op->emitOpError() << "expects a static " << what << " (" << a.name
                           << " dim " << ad << ")";
}

static LogicalResult expectSameShape(Operation *op, const Named &a,
                                     const Named &b) {
  if (succeeded(verifyCompatibleShape(a.type, b.type)))
    return success();
  return op->emitOpError() << "expects " << a.name << " shape "
                           << shapeStr(a.type.getShape()) << " to match "
                           << b.name << " shape "
                           << shapeStr(b.type.getShape());
}

/// DPS ops: each result has exactly the type of its init. Ops with several
/// results name the pair (`values` / `values_init`).
static LogicalResult expectResultMatchesInit(Operation *op, Value result,
                                             Value init,
                                             StringRef resultName = "result",
                                             StringRef initName = "init") {
  if (result.getType() == init.getType())
    return success();
  return op->emitOpError() << "expects " << resultName << " type "
                           << result.getType() << " to match " << initName
                           << " type " << init.getType();
}

/// All weights of one FFN share an element type (one kernel variant).
static LogicalResult expectSameElementType(Operation *op,
                                           ArrayRef<Named> weights) {
  Type first = weights.front().type.getElementType();
  for (const Named &w : weights.drop_front())
    if (w.type.getElementType() != first)
      return op->emitOpError()
             << "expects " << w.name << " element type ("
             << w.type.getElementType() << ") to match "
             << weights.front().name << " element type (" << first << ")";
  return success();
}

static LogicalResult verifyUpProjection(Operation *op, Activation act,
                                        bool hasUp) {
  if (isGatedActivation(act) && !hasUp)
    return op->emitOpError() << "expects the up projection w3 for gated "
                                "activation "
                             << stringifyActivation(act);
  if (!isGatedActivation(act) && hasUp)
    return op->emitOpError()
           << "expects no up projection w3 for activation "
           << stringifyActivation(act);
  return success();
}

//===----------------------------------------------------------------------===//
// Projections
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::verify() {
  Operation *op = getOperation();
  Named x("input", getInput()), w("weight", getWeight()), init("init", getInit());
  if (failed(expectRank(op, x, 2)) || failed(expectRank(op, w, 2)) ||
      failed(expectRank(op, init, 2)))
    return failure();
  if (failed(expectDim(op, w, 1, x, 1)) || failed(expectDim(op, init, 0, x, 0)) ||
      failed(expectDim(op, init, 1, w, 0)))
    return failure();
  return expectResultMatchesInit(op, getResult(), getInit());
}

//===----------------------------------------------------------------------===//
// Routing and selection
//===----------------------------------------------------------------------===//

/// sparsemixer picks by the logits themselves (the top-k of the logits, as
/// topk_then_score) and weighs each pick against all the experts: a selection
/// bias or groups would change the picks without a defined weight.
LogicalResult RouteOp::verifySparsemixer() {
  bool sparsemixer = getScore() == ScoreFunction::sparsemixer;
  std::optional<APFloat> eps = getJitterEps();
  if (!sparsemixer) {
    if (eps)
      return emitOpError() << "expects jitter_eps only with score "
                              "sparsemixer, got score "
                           << stringifyScoreFunction(getScore());
    return success();
  }
  if (!eps)
    return emitOpError("expects jitter_eps with score sparsemixer");
  double value = eps->convertToDouble();
  if (!(value >= 0.0) || !std::isfinite(value))
    return emitOpError() << "expects a finite jitter_eps >= 0, got "
                         << doubleStr(value);
  if (getOrder() != RoutingOrder::topk_then_score)
    return emitOpError("expects order topk_then_score with score sparsemixer "
                       "(it picks by the logits)");
  if (getBias())
    return emitOpError("expects no selection bias with score sparsemixer");
  if (getGroups() != 1)
    return emitOpError("expects no groups with score sparsemixer");
  return success();
}

/// Hash routing looks its experts up: nothing may steer a choice (bias,
/// noise, groups), and there are no fallback choices to rank.
LogicalResult RouteOp::verifyHash() {
  if (static_cast<bool>(getTokenIds()) != static_cast<bool>(getHashTable()))
    return emitOpError("expects token_ids and hash_table together");
  if (!getHashTable())
    return success();
  Operation *op = getOperation();
  Named logits("logits", getLogits()), tokens("token_ids", getTokenIds()),
      table("hash_table", getHashTable());
  if (failed(expectRank(op, tokens, 1)) || failed(expectRank(op, table, 2)) ||
      failed(expectDim(op, tokens, 0, logits, 0)) ||
      failed(expectDimEquals(op, table, 1, getTopK(), "top_k")))
    return failure();
  if (getOrder() != RoutingOrder::score_then_topk ||
      getScore() == ScoreFunction::sparsemixer)
    return emitOpError("expects order score_then_topk and a softmax, sigmoid "
                       "or sqrt_softplus score with hash routing (the table "
                       "picks, the score weighs)");
  if (getBias() || isNoisy() || getGroups() != 1)
    return emitOpError("expects no selection bias, noise or groups with hash "
                       "routing: the table picks the experts");
  if (getNumChoices() != static_cast<int64_t>(getTopK()))
    return emitOpError("expects top_k choices with hash routing: the table "
                       "has no fallback choices");
  return success();
}

LogicalResult RouteOp::verify() {
  Operation *op = getOperation();
  Named logits("logits", getLogits()), weights("weights", getWeights()),
      ids("ids", getIds());
  if (failed(expectRank(op, logits, 2)) || failed(expectRank(op, weights, 2)) ||
      failed(expectRank(op, ids, 2)))
    return failure();
  if (failed(expectStaticDim(op, logits, 1, "expert count")) ||
      failed(expectStaticDim(op, weights, 1, "number of choices")))
    return failure();
  if (failed(expectDim(op, weights, 0, logits, 0)) ||
      failed(expectSameShape(op, ids, weights)))
    return failure();

  int64_t experts = logits.dim(1), k = getTopK(), choices = weights.dim(1);
  if (k > experts)
    return emitOpError() << "expects top_k (" << k << ") <= experts ("
                         << experts << ")";

  if (getBias()) {
    Named bias("bias", getBias());
    if (failed(expectRank(op, bias, 1)) ||
        failed(expectDimEquals(op, bias, 0, experts, "experts")))
      return failure();
  }
  if (failed(verifySparsemixer()) || failed(verifyHash()))
    return failure();
  if (static_cast<bool>(getNoiseLogits()) != static_cast<bool>(getSeed()))
    return emitOpError("expects noise_logits and seed together");
  if (getNoiseLogits()) {
    Named noise("noise_logits", getNoiseLogits());
    if (failed(expectSameShape(op, noise, logits)))
      return failure();
  }

  // Zero and negative factors are defined (a negative one reverses the
  // batch-prioritized order); only inf and nan are not.
  double scaling = getScaling().convertToDouble();
  if (!std::isfinite(scaling))
    return emitOpError() << "expects a finite scaling, got "
                         << doubleStr(scaling);

  int64_t groups = getGroups(), keep = getTopkGroups();
  if (groups < 1)
    return emitOpError() << "expects groups >= 1, got " << groups;
  if (experts % groups != 0)
    return emitOpError() << "expects experts (" << experts
                         << ") divisible by groups (" << groups << ")";
  if (keep < 1 || keep > groups)
    return emitOpError() << "expects topk_groups (" << keep
                         << ") in [1, groups] = [1, " << groups << "]";
  int64_t groupSize = experts / groups;
  if (k > keep * groupSize)
    return emitOpError() << "expects top_k (" << k
                         << ") <= experts in the kept groups (" << keep
                         << " x " << groupSize << " = " << keep * groupSize
                         << ")";
  if (groups > 1 && getGroupScore() == GroupScore::top2_sum && groupSize < 2)
    return emitOpError() << "expects at least 2 experts per group for "
                            "group_score top2_sum, got "
                         << groupSize;

  // Fallback columns continue the ranking inside the kept groups.
  int64_t available = keep * groupSize;
  int64_t maxChoices = std::min(2 * k, available);
  if (choices < k || choices > maxChoices)
    return emitOpError() << "expects the number of choices (" << choices
                         << ") in [top_k, min(2*top_k, "
                         << (groups > 1 ? "experts in the kept groups"
                                        : "experts")
                         << ")] = [" << k << ", " << maxChoices << "]";
  return success();
}

LogicalResult TopKOp::verify() {
  Operation *op = getOperation();
  Named in("input", getInput()), values("values_init", getValuesInit()),
      indices("indices_init", getIndicesInit());
  if (in.rank() < 1)
    return emitOpError("expects input of rank >= 1, got rank 0");
  if (failed(expectRank(op, values, in.rank())) ||
      failed(expectSameShape(op, indices, values)))
    return failure();
  unsigned last = in.rank() - 1;
  for (unsigned d = 0; d < last; ++d)
    if (failed(expectDim(op, values, d, in, d)))
      return failure();
  if (failed(expectStaticDim(op, values, last, "k")))
    return failure();
  int64_t k = values.dim(last), n = in.dim(last);
  if (k < 1)
    return emitOpError() << "expects k >= 1, got " << k;
  if (!ShapedType::isDynamic(n) && k > n)
    return emitOpError() << "expects k (" << k
                         << ") <= input size along the last axis (" << n << ")";
  if (failed(expectResultMatchesInit(op, getValues(), getValuesInit(), "values",
                                     "values_init")))
    return failure();
  return expectResultMatchesInit(op, getIndices(), getIndicesInit(), "indices",
                                 "indices_init");
}

LogicalResult ProductKeyTopKOp::verify() {
  Operation *op = getOperation();
  Named q("query", getQuery()), k1("keys1", getKeys1()),
      k2("keys2", getKeys2()), w("weights_init", getWeightsInit()),
      ids("ids_init", getIdsInit());
  if (failed(expectRank(op, q, 2)) || failed(expectRank(op, w, 3)))
    return failure();
  // Shared sub-keys [n, d_k/2], or one table per head [heads, n, d_k/2].
  int64_t keysRank = k1.type.getRank();
  if (keysRank != 2 && keysRank != 3)
    return emitOpError() << "expects keys1 of rank 2 ([n, d_k/2], shared by "
                            "the heads) or 3 ([heads, n, d_k/2]), got rank "
                         << keysRank;
  int64_t nDim = keysRank - 2;
  if (failed(expectStaticDim(op, k1, nDim, "sub-key count")) ||
      failed(expectStaticDim(op, k1, nDim + 1, "sub-key width")) ||
      failed(expectStaticDim(op, q, 1, "query width")))
    return failure();
  if (failed(expectSameShape(op, k2, k1)))
    return failure();
  if (keysRank == 3 &&
      failed(expectDimEquals(op, k1, 0, getHeads(), "heads")))
    return failure();
  if (k1.type.getElementType() != k2.type.getElementType())
    return emitOpError() << "expects keys2 element type ("
                         << k2.type.getElementType()
                         << ") to match keys1 element type ("
                         << k1.type.getElementType() << ")";
  if (getScore() != ScoreFunction::softmax &&
      getScore() != ScoreFunction::sigmoid)
    return emitOpError() << "expects score softmax or sigmoid, got "
                         << stringifyScoreFunction(getScore());
  int64_t heads = getHeads(), n = k1.dim(nDim), keyDim = 2 * k1.dim(nDim + 1);
  if (q.dim(1) != heads * keyDim)
    return emitOpError() << "expects query width (" << q.dim(1)
                         << ") to equal heads (" << heads << ") x key_dim ("
                         << keyDim << ")";
  // Each stage keeps min(top_k, n) sub-keys, so any k up to n*n is defined.
  if (static_cast<int64_t>(getTopK()) > n * n)
    return emitOpError() << "expects top_k (" << getTopK()
                         << ") <= experts (n*n = " << n * n << ")";
  if (failed(expectDim(op, w, 0, q, 0)) ||
      failed(expectDimEquals(op, w, 1, heads, "heads")) ||
      failed(expectDimEquals(op, w, 2, getTopK(), "top_k")) ||
      failed(expectSameShape(op, ids, w)))
    return failure();
  if (failed(expectResultMatchesInit(op, getWeights(), getWeightsInit(),
                                     "weights", "weights_init")))
    return failure();
  return expectResultMatchesInit(op, getIds(), getIdsInit(), "ids", "ids_init");
}

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

LogicalResult DispatchPlanOp::verify() {
  Operation *op = getOperation();
  Named ids("ids", getIds()), weights("weights", getWeights()),
      counts("counts", getCounts()), offsets("offsets", getOffsets()),
      tokens("token_ids", getTokenIds()),
      slotWeights("slot_weights", getSlotWeights());
  if (failed(expectRank(op, ids, 2)) || failed(expectSameShape(op, weights, ids)))
    return failure();
  if (failed(expectStaticDim(op, ids, 1, "number of choices")))
    return failure();
  int64_t experts = getNumExperts(), k = getTopK(), choices = ids.dim(1);
  if (k > experts)
    return emitOpError() << "expects top_k (" << k << ") <= experts ("
                         << experts << ")";

  std::optional<double> factor;
  if (auto f = getCapacityFactor())
    factor = f->convertToDouble();
  if (factor && (!(*factor > 0.0) || !std::isfinite(*factor)))
    return emitOpError() << "expects a positive finite capacity factor, got "
                         << doubleStr(*factor);
  std::optional<int64_t> tokensPerExpert;
  if (auto n = getCapacityTokens())
    tokensPerExpert = static_cast<int64_t>(*n);
  std::optional<double> fraction;
  if (auto f = getCapacityFraction())
    fraction = f->convertToDouble();
  if (int(factor.has_value()) + int(tokensPerExpert.has_value()) +
          int(fraction.has_value()) >
      1)
    return emitOpError("expects one of a capacity factor, a capacity in "
                       "tokens and a capacity fraction, not more");
  if (fraction && (!(*fraction > 0.0) || !std::isfinite(*fraction)))
    return emitOpError() << "expects a positive finite capacity fraction, got "
                         << doubleStr(*fraction);
  constexpr int64_t maxSlots = std::numeric_limits<int32_t>::max();
  if (tokensPerExpert && (*tokensPerExpert <= 0 || *tokensPerExpert > maxSlots))
    return emitOpError() << "expects a capacity in tokens in [1, " << maxSlots
                         << "], got " << *tokensPerExpert;
  bool capacity = factor || tokensPerExpert || fraction;
  if (!capacity && (getOverflow() != OverflowPolicy::drop ||
                    getPriority() != DispatchPriority::token_order))
    return emitOpError("expects a capacity factor when overflow or priority "
                       "is set");
  if (!capacity && getRenormalize())
    return emitOpError("expects a capacity with renormalize: a dropless plan "
                       "keeps every weight");

  bool fallbacks = capacity && getOverflow() == OverflowPolicy::next_choice;
  if (!fallbacks && choices != k)
    return emitOpError() << "expects ids dim 1 (" << choices
                         << ") to equal top_k (" << k
                         << ") unless overflow is next_choice";
  int64_t maxChoices = std::min(2 * k, experts);
  if (fallbacks && (choices < k || choices > maxChoices))
    return emitOpError() << "expects the number of choices (" << choices
                         << ") in [top_k, min(2*top_k, experts)] = [" << k
                         << ", " << maxChoices << "]";

  if (failed(expectRank(op, counts, 1)) || failed(expectRank(op, offsets, 1)) ||
      failed(expectRank(op, tokens, 1)) ||
      failed(expectSameShape(op, slotWeights, tokens)))
    return failure();
  if (failed(expectDimEquals(op, counts, 0, experts, "experts")) ||
      failed(expectDimEquals(op, offsets, 0, experts + 1, "experts + 1")))
    return failure();
  if (!ShapedType::isDynamic(ids.dim(0)) &&
      failed(expectDimEquals(op, tokens, 0, ids.dim(0) * k, "tokens x top_k")))
    return failure();
  return success();
}

LogicalResult GatherOp::verify() {
  Operation *op = getOperation();
  Named in("input", getInput()), tokens("token_ids", getTokenIds()),
      init("init", getInit());
  if (failed(expectRank(op, in, 2)) || failed(expectRank(op, tokens, 1)) ||
      failed(expectRank(op, init, 2)))
    return failure();
  if (failed(expectDim(op, init, 0, tokens, 0)) ||
      failed(expectDim(op, init, 1, in, 1)))
    return failure();
  if (getScale()) {
    Named scale("scale", getScale());
    if (failed(expectRank(op, scale, 1)) ||
        failed(expectDim(op, scale, 0, tokens, 0)))
      return failure();
  }
  return expectResultMatchesInit(op, getResult(), getInit());
}

LogicalResult CombineOp::verify() {
  Operation *op = getOperation();
  Named rows("expert_rows", getExpertRows()), tokens("token_ids", getTokenIds()),
      w("slot_weights", getSlotWeights()), init("init", getInit());
  if (failed(expectRank(op, rows, 2)) || failed(expectRank(op, tokens, 1)) ||
      failed(expectRank(op, init, 2)))
    return failure();
  if (failed(expectDim(op, tokens, 0, rows, 0)) ||
      failed(expectSameShape(op, w, tokens)) ||
      failed(expectDim(op, init, 1, rows, 1)))
    return failure();
  return expectResultMatchesInit(op, getResult(), getInit());
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

/// The SwiGLU options (clamp limit, alpha, up offset) of an expert op: only
/// with activation swiglu, every number finite, limit and alpha positive.
template <typename OpTy> static LogicalResult verifySwiGLUOptions(OpTy op) {
  std::optional<double> limit;
  if (FloatAttr attr = op.getSwigluLimitAttr())
    limit = attr.getValueAsDouble();
  double alpha = op.getSwigluAlpha().convertToDouble();
  double upOffset = op.getSwigluUpOffset().convertToDouble();
  bool clampAfter = op.getSwigluClampAfterActivation();
  bool anyOption = limit || alpha != 1.0 || upOffset != 0.0 || clampAfter;
  if (anyOption && op.getActivation() != Activation::swiglu)
    return op.emitOpError()
           << "expects the swiglu options only with activation swiglu, got "
           << stringifyActivation(op.getActivation());
  if (limit && !(std::isfinite(*limit) && *limit > 0.0))
    return op.emitOpError() << "expects a finite swiglu_limit > 0, got "
                            << *limit;
  if (!(std::isfinite(alpha) && alpha > 0.0))
    return op.emitOpError() << "expects a finite swiglu_alpha > 0, got "
                            << alpha;
  if (!std::isfinite(upOffset))
    return op.emitOpError() << "expects a finite swiglu_up_offset, got "
                            << upOffset;
  if (clampAfter && !limit)
    return op.emitOpError()
           << "expects swiglu_limit with swiglu_clamp_after_activation";
  return success();
}

/// b1 [E, F] and b2 [E, D] together; b3 [E, F] exactly when they are there
/// and the activation is gated (w1 [E, F, D]).
static LogicalResult verifyExpertBiases(ExpertFFNOp op, const Named &w1) {
  if (static_cast<bool>(op.getB1()) != static_cast<bool>(op.getB2()))
    return op.emitOpError("expects hidden_bias (b1) and out_bias (b2) together");
  bool gated = isGatedActivation(op.getActivation());
  if (op.getB3() && !op.getB1())
    return op.emitOpError("expects up_bias (b3) only with hidden_bias (b1)");
  if (op.getB1() && gated && !op.getB3())
    return op.emitOpError() << "expects up_bias (b3) with hidden_bias for "
                               "gated activation "
                            << stringifyActivation(op.getActivation());
  if (op.getB3() && !gated)
    return op.emitOpError() << "expects no up_bias (b3) for activation "
                            << stringifyActivation(op.getActivation());
  if (!op.getB1())
    return success();
  Operation *o = op.getOperation();
  Named b1("b1", op.getB1()), b2("b2", op.getB2());
  if (failed(expectRank(o, b1, 2)) || failed(expectRank(o, b2, 2)) ||
      failed(expectDim(o, b1, 0, w1, 0)) ||
      failed(expectDim(o, b1, 1, w1, 1)) ||
      failed(expectDim(o, b2, 0, w1, 0)) ||
      failed(expectDim(o, b2, 1, w1, 2)))
    return failure();
  if (op.getB3()) {
    Named b3("b3", op.getB3());
    if (failed(expectSameShape(o, b3, b1)))
      return failure();
  }
  return success();
}

LogicalResult ExpertFFNOp::verify() {
  Operation *op = getOperation();
  Named rows("rows", getRows()), offsets("offsets", getOffsets()),
      w1("w1", getW1()), w2("w2", getW2()), init("init", getInit());
  if (failed(expectRank(op, rows, 2)) || failed(expectRank(op, offsets, 1)) ||
      failed(expectRank(op, w1, 3)) || failed(expectRank(op, w2, 3)) ||
      failed(expectRank(op, init, 2)))
    return failure();
  if (failed(verifyUpProjection(op, getActivation(), getW3() != nullptr)) ||
      failed(verifySwiGLUOptions(*this)))
    return failure();
  SmallVector<Named> weights = {w1, w2};
  if (getW3()) {
    Named w3("w3", getW3());
    if (failed(expectSameShape(op, w3, w1)))
      return failure();
    weights.push_back(w3);
  }
  if (failed(expectSameElementType(op, weights)))
    return failure();
  // w1 [E, F, D], w2 [E, D, F], rows [S, D], offsets [E + 1].
  if (failed(expectDim(op, w2, 0, w1, 0)) || failed(expectDim(op, w2, 1, w1, 2)) ||
      failed(expectDim(op, w2, 2, w1, 1)) ||
      failed(expectDim(op, rows, 1, w1, 2)))
    return failure();
  if (failed(verifyExpertBiases(*this, w1)))
    return failure();
  if (getScale()) {
    Named scale("scale", getScale());
    if (failed(expectRank(op, scale, 1)) ||
        failed(expectDim(op, scale, 0, w1, 0)))
      return failure();
  }
  // The expert count may be static in w2 only.
  int64_t experts = ShapedType::isDynamic(w1.dim(0)) ? w2.dim(0) : w1.dim(0);
  if (!ShapedType::isDynamic(experts) &&
      failed(expectDimEquals(op, offsets, 0, experts + 1, "experts + 1")))
    return failure();
  if (failed(expectSameShape(op, init, rows)))
    return failure();
  return expectResultMatchesInit(op, getResult(), getInit());
}

LogicalResult SharedExpertOp::verify() {
  Operation *op = getOperation();
  Named in("input", getInput()), w1("w1", getW1()), w2("w2", getW2()),
      init("init", getInit());
  if (failed(expectRank(op, in, 2)) || failed(expectRank(op, w1, 2)) ||
      failed(expectRank(op, w2, 2)) || failed(expectRank(op, init, 2)))
    return failure();
  if (failed(verifyUpProjection(op, getActivation(), getW3() != nullptr)) ||
      failed(verifySwiGLUOptions(*this)))
    return failure();
  SmallVector<Named> weights = {w1, w2};
  if (getW3()) {
    Named w3("w3", getW3());
    if (failed(expectSameShape(op, w3, w1)))
      return failure();
    weights.push_back(w3);
  }
  if (failed(expectSameElementType(op, weights)))
    return failure();
  // w1 [Fs, D], w2 [D, Fs], gate [1, D].
  if (failed(expectDim(op, w1, 1, in, 1)) || failed(expectDim(op, w2, 0, in, 1)) ||
      failed(expectDim(op, w2, 1, w1, 0)))
    return failure();
  if (getGate()) {
    Named gate("gate", getGate());
    if (failed(expectRank(op, gate, 2)))
      return failure();
    if (!ShapedType::isDynamic(gate.dim(0)) && gate.dim(0) != 1)
      return emitOpError() << "expects gate dim 0 (" << gate.dim(0)
                           << ") to equal 1 (one gate logit per token)";
    if (failed(expectDim(op, gate, 1, in, 1)))
      return failure();
  }
  if (failed(expectSameShape(op, init, in)))
    return failure();
  return expectResultMatchesInit(op, getResult(), getInit());
}

LogicalResult RMSNormOp::verify() {
  Operation *op = getOperation();
  Named in("input", getInput()), w("weight", getWeight());
  if (failed(expectRank(op, in, 2)) || failed(expectRank(op, w, 1)) ||
      failed(expectDim(op, w, 0, in, 1)))
    return failure();
  double eps = getEpsilon().convertToDouble();
  if (!(eps > 0.0) || !std::isfinite(eps))
    return emitOpError() << "expects a positive finite epsilon, got "
                         << doubleStr(eps);
  return success();
}

LogicalResult SoftcapOp::verify() {
  if (failed(expectRank(getOperation(), Named("input", getInput()), 2)))
    return failure();
  double cap = getCap().convertToDouble();
  if (!(cap > 0.0) || !std::isfinite(cap))
    return emitOpError() << "expects a positive finite cap, got "
                         << doubleStr(cap);
  return success();
}

/// The norms: `input [T, C]`, a per-channel parameter `[C]` (the others
/// share its type by trait) and a positive finite epsilon.
static LogicalResult verifyChannelNorm(Operation *op, const Named &in,
                                       const Named &channelParam,
                                       llvm::APFloat epsilon) {
  if (failed(expectRank(op, in, 2)) ||
      failed(expectRank(op, channelParam, 1)) ||
      failed(expectDim(op, channelParam, 0, in, 1)))
    return failure();
  double eps = epsilon.convertToDouble();
  if (!(eps > 0.0) || !std::isfinite(eps))
    return op->emitOpError()
           << "expects a positive finite epsilon, got " << doubleStr(eps);
  return success();
}

LogicalResult BatchNormOp::verify() {
  return verifyChannelNorm(getOperation(), Named("input", getInput()),
                           Named("mean", getMean()), getEpsilon());
}

LogicalResult LayerNormOp::verify() {
  return verifyChannelNorm(getOperation(), Named("input", getInput()),
                           Named("scale", getScale()), getEpsilon());
}

LogicalResult SingleNeuronExpertsOp::verify() {
  Operation *op = getOperation();
  Named in("input", getInput()), ids("ids", getIds()),
      w("weights", getWeights()), v("expert_out", getExpertOut()),
      init("init", getInit());
  if (failed(expectRank(op, in, 2)) || failed(expectRank(op, ids, 3)) ||
      failed(expectRank(op, v, 2)) || failed(expectRank(op, init, 2)))
    return failure();
  if (failed(expectSameShape(op, w, ids)) || failed(expectDim(op, ids, 0, in, 0)) ||
      failed(expectDim(op, v, 1, in, 1)))
    return failure();
  std::optional<Activation> act = getActivation();
  if (getExpertIn()) {
    Named u("expert_in", getExpertIn());
    if (failed(expectSameShape(op, u, v)) ||
        failed(expectSameElementType(op, {v, u})))
      return failure();
    if (!act)
      return emitOpError("expects an activation with in_proj (PEER experts)");
    if (isGatedActivation(*act))
      return emitOpError()
             << "expects an ungated activation (gelu, gelu_tanh, relu, relu2, "
                "silu), got "
             << stringifyActivation(*act);
  } else if (act) {
    return emitOpError("expects no activation without in_proj (PKM values)");
  }
  if (failed(expectSameShape(op, init, in)))
    return failure();
  return expectResultMatchesInit(op, getResult(), getInit());
}

//===----------------------------------------------------------------------===//
// MH-MoE token split / merge
//===----------------------------------------------------------------------===//

/// `whole [T, D]` and `parts [T*h, D/h]` describe the same tokens.
static LogicalResult verifyTokenReshape(Operation *op, const Named &whole,
                                        const Named &parts, int64_t heads) {
  if (failed(expectRank(op, whole, 2)) || failed(expectRank(op, parts, 2)))
    return failure();
  if (failed(expectStaticDim(op, whole, 1, "model width")))
    return failure();
  int64_t d = whole.dim(1);
  if (d % heads != 0)
    return op->emitOpError() << "expects model width (" << d
                             << ") divisible by heads (" << heads << ")";
  if (failed(expectDimEquals(op, parts, 1, d / heads, "model width / heads")))
    return failure();
  int64_t t = whole.dim(0), s = parts.dim(0);
  if (ShapedType::isDynamic(t) != ShapedType::isDynamic(s) ||
      (!ShapedType::isDynamic(t) && s != t * heads))
    return op->emitOpError()
           << "expects " << parts.name << " dim 0 (" << dimStr(s)
           << ") to equal " << whole.name << " dim 0 x heads (" << dimStr(t)
           << " x " << heads << ")";
  return success();
}

LogicalResult TokenSplitOp::verify() {
  return verifyTokenReshape(getOperation(), Named("input", getInput()),
                            Named("result", getResult()), getHeads());
}

LogicalResult TokenMergeOp::verify() {
  return verifyTokenReshape(getOperation(), Named("result", getResult()),
                            Named("input", getInput()), getHeads());
}

//===----------------------------------------------------------------------===//
// Auxiliary losses
//===----------------------------------------------------------------------===//

LogicalResult AuxLossOp::verify() {
  Operation *op = getOperation();
  Named logits("logits", getLogits());
  if (failed(expectRank(op, logits, 2)))
    return failure();
  AuxLossKind kind = getKind();
  bool needsIds = kind != AuxLossKind::z_loss;
  bool needsWeights = kind == AuxLossKind::importance;
  StringRef kindName = stringifyAuxLossKind(kind);
  if (needsIds != static_cast<bool>(getIds()))
    return emitOpError() << "expects " << (needsIds ? "" : "no ")
                         << "ids for " << kindName;
  if (needsWeights != static_cast<bool>(getWeights()))
    return emitOpError() << "expects " << (needsWeights ? "" : "no ")
                         << "weights for " << kindName;
  if (getIds()) {
    Named ids("ids", getIds());
    if (failed(expectRank(op, ids, 2)) || failed(expectDim(op, ids, 0, logits, 0)))
      return failure();
    if (!ShapedType::isDynamic(ids.dim(1)) &&
        !ShapedType::isDynamic(logits.dim(1)) && ids.dim(1) > logits.dim(1))
      return emitOpError() << "expects ids dim 1 (" << ids.dim(1)
                           << ") <= experts (" << logits.dim(1) << ")";
    if (getWeights() &&
        failed(expectSameShape(op, Named("weights", getWeights()), ids)))
      return failure();
  }
  if (getScore() == ScoreFunction::sparsemixer)
    return emitOpError("expects score softmax, sigmoid or sqrt_softplus: "
                       "sparsemixer weights are no probabilities (a "
                       "sparsemixer router's losses take softmax)");
  double c = getCoefficient().convertToDouble();
  if (!(c >= 0.0) || !std::isfinite(c))
    return emitOpError() << "expects a non-negative finite coefficient, got "
                         << doubleStr(c);
  return success();
}
