//===- LayerBuilder.cpp - emit the moe-dialect function of a layer spec ---===//

#include "moe/Frontend/LayerBuilder.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectRegistry.h"

using namespace mlir;
using namespace mlir::moe;

void mlir::moe::registerLayerBuilderDialects(DialectRegistry &registry) {
  registry.insert<MoEDialect, func::FuncDialect, tensor::TensorDialect,
                  linalg::LinalgDialect, arith::ArithDialect>();
}

static constexpr int64_t kDynamic = ShapedType::kDynamic;

/// PEER's query BatchNorm epsilon (the PyTorch default).
static constexpr double kBatchNormEpsilon = 1e-5;
/// PKM's query LayerNorm epsilon (the PyTorch default).
static constexpr double kLayerNormEpsilon = 1e-5;

namespace {
struct NamedType {
  std::string name;
  Type type;
  /// Rows of a dynamic dim 0 per token: `heads` for MH-MoE sub-tokens.
  std::optional<int64_t> rowsPerToken = std::nullopt;
};

/// What the routed-expert body returns, over its (sub-)tokens.
struct RoutedOutputs {
  Value out, ids, weights, counts, dropped;
  SmallVector<Value> auxLosses;
};

class LayerBuilder {
public:
  LayerBuilder(MLIRContext &context, const LayerSpec &spec)
      : context(context), spec(spec), builder(&context),
        f32(builder.getF32Type()), i32(builder.getI32Type()),
        weightType(getWeightType()) {}

  OwningOpRef<ModuleOp> build();

private:
  Type getWeightType() {
    switch (spec.weightType) {
    case WeightType::f32:
      return builder.getF32Type();
    case WeightType::bf16:
      return builder.getBF16Type();
    case WeightType::f16:
      return builder.getF16Type();
    }
    llvm_unreachable("unknown weight type");
  }

  RankedTensorType tensorOf(ArrayRef<int64_t> shape, Type elementType) {
    return RankedTensorType::get(shape, elementType);
  }
  /// `[?, inner...]`: one row per (sub-)token, the token count dynamic.
  RankedTensorType tokens(ArrayRef<int64_t> inner, Type elementType) {
    SmallVector<int64_t> shape = {kDynamic};
    llvm::append_range(shape, inner);
    return tensorOf(shape, elementType);
  }

  /// The spec position of `path` (or its closest written parent).
  Location loc(StringRef path);

  SmallVector<NamedType> inputs();
  SmallVector<NamedType> outputs();
  void appendRoutedWeights(SmallVectorImpl<NamedType> &args, int64_t width);

  /// The argument named `name`; `inputs()` adds every one the body uses.
  Value arg(StringRef name) const {
    Value value = arguments.lookup(name);
    assert(value && "layer argument missing from the signature");
    return value;
  }
  /// The argument named `name`, or null where the spec does not need it.
  Value optionalArg(StringRef name) const { return arguments.lookup(name); }

  /// A zero tensor to accumulate into; `dynamicSizes` give its `?` dims.
  Value zeros(Location loc, RankedTensorType type, ValueRange dynamicSizes);
  /// A tensor an op overwrites completely.
  Value uninitialized(Location loc, RankedTensorType type,
                      ValueRange dynamicSizes) {
    return tensor::EmptyOp::create(builder, loc, type.getShape(),
                                   type.getElementType(), dynamicSizes);
  }
  Value dim(Location loc, Value tensor, int64_t index) {
    return tensor::DimOp::create(builder, loc, tensor,
                                 constant(loc, builder.getIndexAttr(index)));
  }
  /// One constant per value: the body is straight-line, so the first
  /// definition dominates every later use.
  Value constant(Location loc, TypedAttr value) {
    Value &cached = constants[value];
    if (!cached)
      cached = arith::ConstantOp::create(builder, loc, value);
    return cached;
  }
  /// `[rows, C]` whose every row is `vector [C]`.
  Value broadcastRows(Location loc, Value vector, RankedTensorType type,
                      Value rows) {
    Value empty = uninitialized(loc, type, rows);
    return linalg::BroadcastOp::create(builder, loc, vector, empty,
                                       ArrayRef<int64_t>{0})
        .getResult()[0];
  }
  /// The first `k` columns of a `[?, C]` tensor.
  Value leadingColumns(Location loc, Value tensor, Value rows, int64_t k);

  SmallVector<Value> buildMoE(Value x);
  SmallVector<Value> buildMultiHeadMoE(Value x);
  SmallVector<Value> buildProductKey(Value x);
  /// Router, dispatch, experts and combine over `input [S, W]`.
  RoutedOutputs buildRoutedExperts(Value input);
  /// The spec's `swiglu` options as attributes of an expert op.
  template <typename OpTy> void setSwiGLUOptions(OpTy op);

  MLIRContext &context;
  const LayerSpec &spec;
  OpBuilder builder;
  Type f32, i32, weightType;
  llvm::StringMap<Value> arguments;
  DenseMap<Attribute, Value> constants;
};
} // namespace

Location LayerBuilder::loc(StringRef path) {
  std::optional<SpecLocation> where = spec.locationOf(path);
  if (!where || spec.sourceName.empty())
    return NameLoc::get(builder.getStringAttr(spec.name));
  return FileLineColLoc::get(&context, spec.sourceName, where->line,
                             where->column);
}

//===----------------------------------------------------------------------===//
// Signature
//===----------------------------------------------------------------------===//

void LayerBuilder::appendRoutedWeights(SmallVectorImpl<NamedType> &args,
                                       int64_t width) {
  int64_t e = spec.experts, f = spec.expertHidden;
  if (spec.router.rmsNorm)
    args.push_back({"router_norm", tensorOf({width}, f32)});
  if (spec.expertRmsNorm)
    args.push_back({"expert_norm", tensorOf({width}, f32)});
  args.push_back({"gate", tensorOf({e, width}, weightType)});
  if (spec.router.hashVocab)
    args.push_back(
        {"tid2eid", tensorOf({spec.router.hashVocab, spec.router.topK}, i32)});
  if (spec.router.logitBias)
    args.push_back({"logit_bias", tensorOf({e}, f32)});
  if (spec.router.selectionBias)
    args.push_back({"gate_bias", tensorOf({e}, f32)});
  if (spec.router.noise)
    args.push_back({"w_noise", tensorOf({e, width}, weightType)});
  args.push_back({"w1", tensorOf({e, f, width}, weightType)});
  if (isGatedActivation(spec.activation))
    args.push_back({"w3", tensorOf({e, f, width}, weightType)});
  args.push_back({"w2", tensorOf({e, width, f}, weightType)});
  if (spec.expertBias) {
    args.push_back({"b1", tensorOf({e, f}, f32)});
    if (isGatedActivation(spec.activation))
      args.push_back({"b3", tensorOf({e, f}, f32)});
    args.push_back({"b2", tensorOf({e, width}, f32)});
  }
  if (spec.expertScale)
    args.push_back({"expert_scale", tensorOf({e}, f32)});
}

// The ops are created with the plain SwiGLU's values (which the printer
// elides); the spec's options then override them.
template <typename OpTy> void LayerBuilder::setSwiGLUOptions(OpTy op) {
  if (!spec.swiglu)
    return;
  const SwiGLUSpec &s = *spec.swiglu;
  if (s.limit)
    op.setSwigluLimitAttr(builder.getF64FloatAttr(*s.limit));
  if (s.alpha != 1.0)
    op.setSwigluAlphaAttr(builder.getF64FloatAttr(s.alpha));
  if (s.upOffset != 0.0)
    op.setSwigluUpOffsetAttr(builder.getF64FloatAttr(s.upOffset));
  if (s.clamp == SwiGLUClamp::after_activation)
    op.setSwigluClampAfterActivation(true);
}

SmallVector<NamedType> LayerBuilder::inputs() {
  int64_t d = spec.dModel;
  SmallVector<NamedType> args = {{"x", tokens({d}, f32)}};
  // Hash routing's per-token input: the token ids the table is indexed by.
  if (spec.isRouted() && spec.router.hashVocab)
    args.push_back({"token_ids", tokens({}, i32)});
  switch (spec.kind) {
  case LayerKind::moe: {
    appendRoutedWeights(args, d);
    if (spec.hasSharedExperts()) {
      int64_t fs = spec.sharedExperts.hidden;
      args.push_back({"shared_w1", tensorOf({fs, d}, weightType)});
      if (isGatedActivation(spec.activation))
        args.push_back({"shared_w3", tensorOf({fs, d}, weightType)});
      args.push_back({"shared_w2", tensorOf({d, fs}, weightType)});
      if (spec.sharedExperts.gate)
        args.push_back({"shared_gate", tensorOf({1, d}, weightType)});
    }
    break;
  }
  case LayerKind::mh_moe:
    args.push_back({"head_proj", tensorOf({d, d}, weightType)});
    args.push_back({"merge_proj", tensorOf({d, d}, weightType)});
    appendRoutedWeights(args, spec.expertWidth());
    break;
  case LayerKind::peer:
  case LayerKind::pkm: {
    int64_t n = spec.numSubKeys(), queryWidth = spec.heads * spec.keyDim;
    args.push_back({"query", tensorOf({queryWidth, d}, weightType)});
    if (spec.queryBatchNorm)
      for (StringRef name : {"bn_mean", "bn_var", "bn_weight", "bn_bias"})
        args.push_back({name.str(), tensorOf({queryWidth}, f32)});
    if (spec.queryLayerNorm)
      for (StringRef name : {"ln_weight", "ln_bias"})
        args.push_back({name.str(), tensorOf({queryWidth}, f32)});
    SmallVector<int64_t> keysShape = {n, spec.keyDim / 2};
    if (spec.keysPerHead)
      keysShape.insert(keysShape.begin(), spec.heads);
    args.push_back({"keys1", tensorOf(keysShape, weightType)});
    args.push_back({"keys2", tensorOf(keysShape, weightType)});
    if (spec.kind == LayerKind::peer) {
      args.push_back({"expert_in", tensorOf({spec.experts, d}, weightType)});
      args.push_back({"expert_out", tensorOf({spec.experts, d}, weightType)});
    } else {
      args.push_back({"values", tensorOf({spec.experts, d}, weightType)});
    }
    break;
  }
  }
  if (spec.isRouted() && spec.outputBias)
    args.push_back({"output_bias", tensorOf({d}, f32)});
  if (spec.isRouted() && spec.router.noise)
    args.push_back({"seed", builder.getI64Type()});
  return args;
}

SmallVector<NamedType> LayerBuilder::outputs() {
  SmallVector<NamedType> results = {{"out", tokens({spec.dModel}, f32)}};
  if (spec.isProductKey()) {
    results.push_back({"topk_ids", tokens({spec.heads, spec.topK}, i32)});
    results.push_back({"topk_weights", tokens({spec.heads, spec.topK}, f32)});
    return results;
  }
  // mh_moe routes sub-tokens: the leading dim is tokens x heads.
  int64_t k = spec.router.topK;
  std::optional<int64_t> rowsPerToken;
  if (spec.kind == LayerKind::mh_moe)
    rowsPerToken = spec.heads;
  results.push_back({"topk_ids", tokens({k}, i32), rowsPerToken});
  results.push_back({"topk_weights", tokens({k}, f32), rowsPerToken});
  results.push_back({"expert_counts", tensorOf({spec.experts}, i32)});
  results.push_back({"dropped", tensorOf({}, i32)});
  for (AuxLossKind loss : spec.auxLosses)
    results.push_back({stringifyAuxLossKind(loss).str(), tensorOf({}, f32)});
  return results;
}

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

Value LayerBuilder::zeros(Location loc, RankedTensorType type,
                          ValueRange dynamicSizes) {
  if (type.hasStaticShape())
    return constant(loc, DenseElementsAttr::get(
                             type, builder.getZeroAttr(type.getElementType())));
  Value zero = constant(
      loc, cast<TypedAttr>(builder.getZeroAttr(type.getElementType())));
  Value empty = uninitialized(loc, type, dynamicSizes);
  return linalg::FillOp::create(builder, loc, ValueRange{zero},
                                ValueRange{empty})
      .getResult(0);
}

Value LayerBuilder::leadingColumns(Location loc, Value tensor, Value rows,
                                   int64_t k) {
  SmallVector<OpFoldResult> offsets = {builder.getIndexAttr(0),
                                       builder.getIndexAttr(0)};
  SmallVector<OpFoldResult> sizes = {rows, builder.getIndexAttr(k)};
  SmallVector<OpFoldResult> strides = {builder.getIndexAttr(1),
                                       builder.getIndexAttr(1)};
  return tensor::ExtractSliceOp::create(builder, loc, tensor, offsets, sizes,
                                        strides);
}

//===----------------------------------------------------------------------===//
// Layer bodies
//===----------------------------------------------------------------------===//

RoutedOutputs LayerBuilder::buildRoutedExperts(Value input) {
  const RouterSpec &router = spec.router;
  int64_t e = spec.experts, k = router.topK, width = spec.expertWidth();
  int64_t choices = spec.numRouterChoices();
  Location routerLoc = loc("router");
  Value numTokens = dim(routerLoc, input, 0);

  // Router: logits, optional noise logits, scores and choices. With an input
  // RMSNorm (Gemma 4) the router's projections see the normalised tokens;
  // the experts see `input`.
  Value routerInput = input;
  if (Value norm = optionalArg("router_norm"))
    routerInput = RMSNormOp::create(builder, loc("router.rms_norm"),
                                    input.getType(), input, norm,
                                    llvm::APFloat(router.rmsNormEps));
  // Gemma 4 normalises the experts' input apart from the router's.
  Value expertInput = input;
  if (Value norm = optionalArg("expert_norm"))
    expertInput = RMSNormOp::create(builder, loc("expert_rms_norm"),
                                    input.getType(), input, norm,
                                    llvm::APFloat(spec.expertRmsNormEps));
  RankedTensorType logitsType = tokens({e}, f32);
  Value bias = optionalArg("logit_bias");
  Value zeroLogits;
  if (!bias || router.noise)
    zeroLogits = zeros(routerLoc, logitsType, numTokens);
  // A logit bias (GPT-OSS) is the linear's init broadcast over the tokens:
  // `bias + x · gateᵀ`, the logits every later use (route, aux losses) sees.
  Value gateInit = zeroLogits;
  if (bias) {
    Location biasLoc = loc("router.logit_bias");
    gateInit = linalg::BroadcastOp::create(
                   builder, biasLoc, bias,
                   uninitialized(biasLoc, logitsType, numTokens),
                   ArrayRef<int64_t>{0})
                   .getResult()[0];
  }
  Value logits = LinearOp::create(builder, routerLoc, logitsType, routerInput,
                                  arg("gate"), gateInit);
  if (router.softcap)
    logits = SoftcapOp::create(builder, loc("router.softcap"),
                               logits.getType(), logits,
                               llvm::APFloat(*router.softcap));
  Value noiseLogits;
  if (router.noise)
    noiseLogits =
        LinearOp::create(builder, loc("router.noise"), logitsType, routerInput,
                         arg("w_noise"), zeroLogits);
  FloatAttr jitterEps;
  if (router.score == ScoreFunction::sparsemixer)
    jitterEps = builder.getF64FloatAttr(router.jitterEps);
  auto route = RouteOp::create(
      builder, routerLoc, tokens({choices}, f32), tokens({choices}, i32),
      logits, optionalArg("gate_bias"), noiseLogits, optionalArg("seed"),
      optionalArg("token_ids"), optionalArg("tid2eid"), k, router.score,
      jitterEps, router.order, router.normalize,
      llvm::APFloat(router.scaling), router.groups, router.topkGroups,
      router.groupScore);

  // Dispatch plan: expert-major slots, with capacity when the spec has one.
  Location planLoc = loc(spec.capacity ? "capacity" : "router.top_k");
  FloatAttr capacityFactor, capacityFraction;
  IntegerAttr capacityTokens;
  OverflowPolicy overflow = OverflowPolicy::drop;
  DispatchPriority priority = DispatchPriority::token_order;
  bool renormalize = false;
  if (spec.capacity) {
    if (spec.capacity->factor)
      capacityFactor = builder.getF64FloatAttr(*spec.capacity->factor);
    else if (spec.capacity->tokenFraction)
      capacityFraction =
          builder.getF64FloatAttr(*spec.capacity->tokenFraction);
    else
      capacityTokens = builder.getI64IntegerAttr(*spec.capacity->tokens);
    overflow = spec.capacity->overflow;
    priority = spec.capacity->priority;
    renormalize = spec.capacity->renormalize;
  }
  auto plan = DispatchPlanOp::create(
      builder, planLoc, tensorOf({e}, i32), tensorOf({e + 1}, i32),
      tensorOf({kDynamic}, i32), tensorOf({kDynamic}, f32), tensorOf({}, i32),
      route.getIds(), route.getWeights(), e, k, capacityFactor, capacityTokens,
      capacityFraction, overflow, priority, renormalize);

  // Routed experts over the expert-major rows.
  Location expertLoc = loc("expert_hidden");
  Value numSlots = dim(expertLoc, plan.getTokenIds(), 0);
  RankedTensorType rowsType = tokens({width}, f32);
  // Llama 4 scales the expert input by the weight and sums the outputs as
  // they are (unit combine weights); otherwise the weight scales the output.
  Value inputScale, combineWeights = plan.getSlotWeights();
  if (router.scoreOnInput) {
    inputScale = plan.getSlotWeights();
    RankedTensorType slotsType = tensorOf({kDynamic}, f32);
    combineWeights = linalg::FillOp::create(
                         builder, expertLoc,
                         ValueRange{constant(expertLoc, builder.getF32FloatAttr(1.0))},
                         ValueRange{uninitialized(expertLoc, slotsType, numSlots)})
                         .getResult(0);
  }
  Value rows = GatherOp::create(builder, expertLoc, rowsType, expertInput,
                                plan.getTokenIds(), inputScale,
                                uninitialized(expertLoc, rowsType, numSlots));
  auto expertFFN = ExpertFFNOp::create(
      builder, expertLoc, rowsType, rows, plan.getOffsets(), arg("w1"),
      arg("w2"), optionalArg("w3"), optionalArg("b1"), optionalArg("b3"),
      optionalArg("b2"), optionalArg("expert_scale"),
      zeros(expertLoc, rowsType, numSlots), spec.activation, FloatAttr(),
      llvm::APFloat(1.0), llvm::APFloat(0.0));
  setSwiGLUOptions(expertFFN);
  Value expertRows = expertFFN;

  // Shared experts see every token; the routed outputs are added to theirs.
  // A moe layer's output bias is where the sum starts (mh_moe adds it in its
  // merge projection).
  Value accumulator =
      spec.kind == LayerKind::moe && spec.outputBias
          ? broadcastRows(loc("output_bias"), arg("output_bias"), rowsType,
                          numTokens)
          : zeros(expertLoc, rowsType, numTokens);
  if (spec.hasSharedExperts()) {
    auto shared = SharedExpertOp::create(
        builder, loc("shared_experts"), rowsType, expertInput, arg("shared_w1"),
        arg("shared_w2"), optionalArg("shared_w3"), optionalArg("shared_gate"),
        accumulator, spec.activation, FloatAttr(), llvm::APFloat(1.0),
        llvm::APFloat(0.0));
    setSwiGLUOptions(shared);
    accumulator = shared;
  }
  Value out =
      CombineOp::create(builder, expertLoc, rowsType, expertRows,
                        plan.getTokenIds(), combineWeights, accumulator);

  RoutedOutputs outputs;
  outputs.out = out;
  outputs.ids = route.getIds();
  outputs.weights = route.getWeights();
  // Columns past top_k are next_choice fallbacks, not the token's choices.
  if (choices > k) {
    outputs.ids = leadingColumns(routerLoc, outputs.ids, numTokens, k);
    outputs.weights = leadingColumns(routerLoc, outputs.weights, numTokens, k);
  }
  outputs.counts = plan.getCounts();
  outputs.dropped = plan.getDropped();

  // sparsemixer's weights are no probabilities: its losses take the softmax
  // of the logits, as PhiMoE's load-balancing loss does.
  ScoreFunction lossScore = router.score == ScoreFunction::sparsemixer
                                ? ScoreFunction::softmax
                                : router.score;
  for (AuxLossKind kind : spec.auxLosses) {
    Value ids = kind == AuxLossKind::z_loss ? Value() : outputs.ids;
    Value weights = kind == AuxLossKind::importance ? outputs.weights : Value();
    outputs.auxLosses.push_back(AuxLossOp::create(
        builder, loc(("aux_losses." + stringifyAuxLossKind(kind)).str()),
        tensorOf({}, f32), kind, logits, ids, weights, lossScore,
        llvm::APFloat(1.0)));
  }
  return outputs;
}

static SmallVector<Value> routedResults(Value out, const RoutedOutputs &r) {
  SmallVector<Value> results = {out, r.ids, r.weights, r.counts, r.dropped};
  llvm::append_range(results, r.auxLosses);
  return results;
}

SmallVector<Value> LayerBuilder::buildMoE(Value x) {
  RoutedOutputs routed = buildRoutedExperts(x);
  return routedResults(routed.out, routed);
}

SmallVector<Value> LayerBuilder::buildMultiHeadMoE(Value x) {
  int64_t d = spec.dModel, h = spec.heads;
  Location headLoc = loc("heads");
  Value numTokens = dim(headLoc, x, 0);
  RankedTensorType tokenType = tokens({d}, f32);
  Value projInit = zeros(headLoc, tokenType, numTokens);
  Value projected = LinearOp::create(builder, headLoc, tokenType, x,
                                     arg("head_proj"), projInit);
  Value subTokens = TokenSplitOp::create(
      builder, headLoc, tokens({spec.expertWidth()}, f32), projected, h);
  RoutedOutputs routed = buildRoutedExperts(subTokens);
  Value merged =
      TokenMergeOp::create(builder, headLoc, tokenType, routed.out, h);
  Value mergeInit =
      spec.outputBias ? broadcastRows(loc("output_bias"), arg("output_bias"),
                                      tokenType, numTokens)
                      : projInit;
  Value out = LinearOp::create(builder, headLoc, tokenType, merged,
                               arg("merge_proj"), mergeInit);
  return routedResults(out, routed);
}

SmallVector<Value> LayerBuilder::buildProductKey(Value x) {
  int64_t h = spec.heads, k = spec.topK;
  Location queryLoc = loc("key_dim");
  Value numTokens = dim(queryLoc, x, 0);
  RankedTensorType queryType = tokens({h * spec.keyDim}, f32);
  Value query = LinearOp::create(builder, queryLoc, queryType, x, arg("query"),
                                 zeros(queryLoc, queryType, numTokens));
  if (spec.queryBatchNorm)
    query =
        BatchNormOp::create(builder, loc("query_batchnorm"), queryType, query,
                            arg("bn_mean"), arg("bn_var"), arg("bn_weight"),
                            arg("bn_bias"), llvm::APFloat(kBatchNormEpsilon));
  if (spec.queryLayerNorm)
    query = LayerNormOp::create(builder, loc("query_layernorm"), queryType,
                                query, arg("ln_weight"), arg("ln_bias"),
                                llvm::APFloat(kLayerNormEpsilon));

  Location retrievalLoc = loc("top_k");
  RankedTensorType weightsType = tokens({h, k}, f32);
  RankedTensorType idsType = tokens({h, k}, i32);
  auto retrieval = ProductKeyTopKOp::create(
      builder, retrievalLoc, weightsType, idsType, query, arg("keys1"),
      arg("keys2"), uninitialized(retrievalLoc, weightsType, numTokens),
      uninitialized(retrievalLoc, idsType, numTokens), h, k, spec.score);

  Location expertLoc = loc("experts");
  RankedTensorType tokenType = tokens({spec.dModel}, f32);
  bool isPeer = spec.kind == LayerKind::peer;
  Value out = SingleNeuronExpertsOp::create(
      builder, expertLoc, tokenType, x, retrieval.getIds(),
      retrieval.getWeights(), arg(isPeer ? "expert_out" : "values"),
      optionalArg("expert_in"), zeros(expertLoc, tokenType, numTokens),
      isPeer ? ActivationAttr::get(&context, spec.activation)
             : ActivationAttr());
  return {out, retrieval.getIds(), retrieval.getWeights()};
}

OwningOpRef<ModuleOp> LayerBuilder::build() {
  context.loadDialect<MoEDialect, func::FuncDialect, tensor::TensorDialect,
                      linalg::LinalgDialect, arith::ArithDialect>();

  Location layerLoc = loc("name");
  OwningOpRef<ModuleOp> module = ModuleOp::create(layerLoc);
  builder.setInsertionPointToEnd(module->getBody());

  SmallVector<NamedType> args = inputs(), results = outputs();
  SmallVector<Type> argTypes, resultTypes;
  for (const NamedType &a : args)
    argTypes.push_back(a.type);
  for (const NamedType &r : results)
    resultTypes.push_back(r.type);
  auto func =
      func::FuncOp::create(builder, layerLoc, spec.name,
                           builder.getFunctionType(argTypes, resultTypes));
  for (auto [index, a] : llvm::enumerate(args))
    func.setArgAttr(index, kNameAttr, builder.getStringAttr(a.name));
  for (auto [index, r] : llvm::enumerate(results)) {
    func.setResultAttr(index, kNameAttr, builder.getStringAttr(r.name));
    if (r.rowsPerToken)
      func.setResultAttr(index, kRowsPerTokenAttr,
                         builder.getI64IntegerAttr(*r.rowsPerToken));
  }

  Block *body = func.addEntryBlock();
  builder.setInsertionPointToStart(body);
  for (auto [a, value] : llvm::zip(args, body->getArguments()))
    arguments[a.name] = value;

  Value x = arg("x");
  SmallVector<Value> values;
  switch (spec.kind) {
  case LayerKind::moe:
    values = buildMoE(x);
    break;
  case LayerKind::mh_moe:
    values = buildMultiHeadMoE(x);
    break;
  case LayerKind::peer:
  case LayerKind::pkm:
    values = buildProductKey(x);
    break;
  }
  func::ReturnOp::create(builder, layerLoc, values);
  return module;
}

OwningOpRef<ModuleOp> mlir::moe::buildLayerModule(MLIRContext &context,
                                                  const LayerSpec &spec) {
  return LayerBuilder(context, spec).build();
}
