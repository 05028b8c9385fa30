//===- MoEOps.td - ops of the moe dialect ------------------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_IR_MOEOPS_TD
#define MOE_DIALECT_MOE_IR_MOEOPS_TD

include "moe/Dialect/MoE/IR/MoEDialect.td"
include "moe/Dialect/MoE/IR/MoEEnums.td"
include "mlir/Interfaces/DestinationStyleOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/OpAsmInterface.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def MoE_F32Tensor : RankedTensorOf<[F32]>;
def MoE_I32Tensor : RankedTensorOf<[I32]>;
def MoE_WeightTensor : RankedTensorOf<[F32, BF16, F16]>;
def MoE_F32Scalar : 0DTensorOf<[F32]>;
def MoE_I32Scalar : 0DTensorOf<[I32]>;

// Ops with `outs` operands: results are tied one-to-one to the inits.
class MoE_DPSOp<string mnemonic, list<Trait> traits = []>
    : MoE_Op<mnemonic, !listconcat(traits, [
        Pure, DestinationStyleOpInterface,
        DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>])> {
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Projections
//===----------------------------------------------------------------------===//

def MoE_LinearOp : MoE_DPSOp<"linear"> {
  let summary = "dense projection `init + x · wᵀ` with a PyTorch-layout weight";
  let description = [{
    Computes `result[t, o] = init[t, o] + Σ_i x[t, i] · w[o, i]` with `f32`
    accumulation. `w` is `[out, in]` (the `nn.Linear` layout) and may be
    `bf16` or `f16`. Router logits, noise logits, PEER queries and the MH-MoE
    head/merge projections are all `moe.linear`.

    ```mlir
    %logits = moe.linear ins(%x, %gate : tensor<?x64xf32>, tensor<8x64xf32>)
                         outs(%zero : tensor<?x8xf32>) -> tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, MoE_WeightTensor:$weight,
                       MoE_F32Tensor:$init);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    `ins` `(` $input `,` $weight `:` type($input) `,` type($weight) `)`
    `outs` `(` $init `:` type($init) `)` attr-dict `->` type($result)
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() { return getInitMutable(); }
  }];
}

//===----------------------------------------------------------------------===//
// Routing and selection
//===----------------------------------------------------------------------===//

def MoE_RMSNormOp : MoE_Op<"rms_norm", [Pure,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "RMSNorm of each token row with an f32 per-channel weight";
  let description = [{
    `result[t, c] = input[t, c] · (mean_j input[t, j]² + epsilon)^(-1/2) ·
    weight[c]` (Gemma 4's router input norm; the mean is a sum in `j` order
    divided by the width). `input` is `[T, D]`, `weight` is `[D]` (`f32`).

    ```mlir
    %xr = moe.rms_norm %x, %w {epsilon = 1.0e-06 : f64}
        : tensor<?x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, MoE_F32Tensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$epsilon);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def MoE_SoftcapOp : MoE_Op<"softcap", [Pure,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "tanh soft-cap of router logits, `cap · tanh(input / cap)`";
  let description = [{
    Bounds router logits `[T, E]` to `(-cap, cap)` elementwise:
    `result = cap · tanh(input / cap)` (Laguna's router logit soft-capping).
    `cap` is positive and finite. The capped logits are the router's logits:
    `moe.route` and `moe.aux_loss` both take them.

    ```mlir
    %capped = moe.softcap %logits cap(3.0e+01) : tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, F64Attr:$cap);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    $input `cap` `(` $cap `)` attr-dict `:` type($input)
  }];
  let hasVerifier = 1;
}

def MoE_RouteOp : MoE_Op<"route", [Pure, AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>]> {
  let summary = "router: expert choices and combine weights from logits";
  let description = [{
    Turns router logits `[T, E]` into the experts each token is sent to and
    the weights its expert outputs are combined with, returned as
    `weights[T, C]` (`f32`) and `ids[T, C]` (`i32`) in rank order.

    - `score`: `softmax`, `sigmoid` or `sqrt_softplus` (DeepSeek-V4,
      `sqrt(softplus(l))`) of the logits; the last two are elementwise.
      `sparsemixer` (PhiMoE, with `jitter_eps`, order `topk_then_score`, no
      bias or groups): choice `i` picks the i-th ranked logit `m` and weighs
      it `1 / Σ_j exp(l_j - m)` over the experts `j` not ranked ahead of it
      whose `(m - l_j) / max(|l_j|, m)` is at most `2·jitter_eps`.
    - `order`: `score_then_topk` scores all `E` experts then picks the
      top-k; `topk_then_score` (Mixtral, noisy top-k) picks the top-k logits
      and scores only those (every other expert is `-inf` before the softmax).
    - `normalize`: renormalise the `top_k` weights of a token to sum 1.
    - `scaling`: routed scaling factor multiplied into the weights (any
      finite value).
    - `bias` (DeepSeek-V3 selection bias, `[E]`): experts are *chosen* by
      `score + bias` (`logits + bias` under `topk_then_score`) but
      *weighted* by `score`.
    - `groups`/`topk_groups`/`group_score`: group-limited routing; experts
      form `groups` equal groups, each token keeps its best `topk_groups`
      groups (ranked by the group's max score or the sum of its top-2) and
      picks its top-k inside them.
    - `token_ids`, `hash_table` (DeepSeek-V4 hash routing): the experts are
      not chosen by the logits but looked up, `ids[t, j] =
      hash_table[token_ids[t], j]` (`token_ids [T]`, `hash_table [V, top_k]`,
      both `i32`), and weighted by the score as under `score_then_topk`; a
      token id outside `[0, V)` or a table entry outside `[0, E)` gives that
      choice id `-1` and weight `0` (the dispatch drops it).
    - `noise_logits`, `seed` (noisy top-k gating): the selection uses
      `logits + N(0,1) · softplus(noise_logits)` with normal samples from a
      counter-based generator keyed by `seed` and the (token, expert)
      position, so a seed reproduces its output exactly.

    `C` is `top_k`, or up to `min(2·top_k, A)` when the dispatch plan needs
    the ranked fallback choices of `next_choice` overflow (`A` is `E`, or
    the `topk_groups · E / groups` experts of the kept groups): columns
    `top_k ..< C` are the next-ranked experts, weighted as their score would
    have been in a selected slot (same normalisation and scaling).
    Ties pick the lower expert index; NaN scores never rank ahead of
    finite ones.

    ```mlir
    %w, %ids = moe.route %logits top_k(2) score(softmax) order(topk_then_score)
        : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    %w2, %ids2 = moe.route %logits top_k(2) score(sparsemixer)
        jitter_eps(1.000000e-02) order(topk_then_score)
        : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    ```
  }];
  let arguments = (ins
    MoE_F32Tensor:$logits,
    Optional<MoE_F32Tensor>:$bias,
    Optional<MoE_F32Tensor>:$noise_logits,
    Optional<I64>:$seed,
    Optional<MoE_I32Tensor>:$token_ids,
    Optional<MoE_I32Tensor>:$hash_table,
    ConfinedAttr<I64Attr, [IntPositive]>:$top_k,
    MoE_ScoreFunctionAttr:$score,
    OptionalAttr<F64Attr>:$jitter_eps,
    MoE_RoutingOrderAttr:$order,
    DefaultValuedAttr<BoolAttr, "false">:$normalize,
    DefaultValuedAttr<F64Attr, "1.0">:$scaling,
    DefaultValuedAttr<I64Attr, "1">:$groups,
    DefaultValuedAttr<I64Attr, "1">:$topk_groups,
    DefaultValuedAttr<MoE_GroupScoreAttr, "GroupScore::max">:$group_score);
  let results = (outs MoE_F32Tensor:$weights, MoE_I32Tensor:$ids);
  let assemblyFormat = [{
    $logits `top_k` `(` $top_k `)` `score` `(` custom<Keyword>($score) `)`
    (`jitter_eps` `(` $jitter_eps^ `)`)?
    `order` `(` custom<Keyword>($order) `)`
    (`groups` `(` $groups^ `,` `keep` $topk_groups `,` custom<Keyword>($group_score) `)`)?
    (`bias` `(` $bias^ `:` type($bias) `)`)?
    (`noise` `(` $noise_logits^ `,` $seed `:` type($noise_logits) `)`)?
    (`hash` `(` $token_ids^ `,` $hash_table `:` type($token_ids) `,`
      type($hash_table) `)`)?
    attr-dict `:` type($logits) `->` type($weights) `,` type($ids)
  }];
  let hasVerifier = 1;
  let hasCanonicalizeMethod = 1;
  let extraClassDeclaration = [{
    /// Number of ranked choices returned per token (top_k plus fallbacks).
    int64_t getNumChoices();
    bool isNoisy() { return static_cast<bool>(getNoiseLogits()); }
    bool isHashed() { return static_cast<bool>(getHashTable()); }

  private:
    LogicalResult verifySparsemixer();
    LogicalResult verifyHash();
  public:
  }];
}

def MoE_TopKOp : MoE_DPSOp<"topk"> {
  let summary = "k largest values along the last axis, with their indices";
  let description = [{
    Writes the `k` largest entries of each row of `input` (last axis) into
    `values`, in descending order, and their positions into `indices`
    (`i32`); `k` is the static last dimension of the inits. Ties pick the
    lower index; NaN never ranks ahead of a finite value.

    ```mlir
    %v, %i = moe.topk ins(%s : tensor<?x64xf32>)
        outs(%v0, %i0 : tensor<?x4xf32>, tensor<?x4xi32>)
        -> tensor<?x4xf32>, tensor<?x4xi32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, MoE_F32Tensor:$values_init,
                       MoE_I32Tensor:$indices_init);
  let results = (outs MoE_F32Tensor:$values, MoE_I32Tensor:$indices);
  let assemblyFormat = [{
    `ins` `(` $input `:` type($input) `)`
    `outs` `(` $values_init `,` $indices_init `:` type($values_init) `,`
      type($indices_init) `)` attr-dict
    `->` type($values) `,` type($indices)
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() {
      return ::mlir::MutableOperandRange(getOperation(), /*start=*/1,
                                         /*length=*/2);
    }
    int64_t getK() {
      return getValuesInit().getType().getShape().back();
    }
  }];
}

def MoE_ProductKeyTopKOp : MoE_DPSOp<"product_key_topk"> {
  let summary = "PEER/PKM product-key retrieval over two sub-key tables";
  let description = [{
    For every token and each of `heads` query heads, splits the head's query
    `q ∈ R^{d_k}` into halves `q1, q2`, takes the top-k' of `keys1 · q1` and
    of `keys2 · q2` (`keys1, keys2` are `[n, d_k/2]`, shared by the heads,
    or `[heads, n, d_k/2]`, a table per head; `k' = min(top_k, n)`),
    then the top-k of the `k' × k'` candidate sums (`top_k <= n·n`), and
    returns the expert ids `i·n + j` (`i32`) and
    their `score` function (softmax or sigmoid over the head's k scores;
    not `sqrt_softplus`, a router score).
    `query` is `[T, heads·d_k]`; results are `[T, heads, top_k]`. Ties pick
    the lower id.

    ```mlir
    %w, %ids = moe.product_key_topk heads(8) top_k(16) score(softmax)
        ins(%q, %k1, %k2 : tensor<?x1024xf32>, tensor<1024x64xf32>, tensor<1024x64xf32>)
        outs(%w0, %i0 : tensor<?x8x16xf32>, tensor<?x8x16xi32>)
        -> tensor<?x8x16xf32>, tensor<?x8x16xi32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$query, MoE_WeightTensor:$keys1,
                       MoE_WeightTensor:$keys2, MoE_F32Tensor:$weights_init,
                       MoE_I32Tensor:$ids_init,
                       ConfinedAttr<I64Attr, [IntPositive]>:$heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$top_k,
                       MoE_ScoreFunctionAttr:$score);
  let results = (outs MoE_F32Tensor:$weights, MoE_I32Tensor:$ids);
  let assemblyFormat = [{
    `heads` `(` $heads `)` `top_k` `(` $top_k `)` `score` `(` custom<Keyword>($score) `)`
    `ins` `(` $query `,` $keys1 `,` $keys2 `:` type($query) `,` type($keys1)
      `,` type($keys2) `)`
    `outs` `(` $weights_init `,` $ids_init `:` type($weights_init) `,`
      type($ids_init) `)` attr-dict
    `->` type($weights) `,` type($ids)
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() {
      return ::mlir::MutableOperandRange(getOperation(), /*start=*/3,
                                         /*length=*/2);
    }
  }];
}

//===----------------------------------------------------------------------===//
// Dispatch: plan, gather, combine
//===----------------------------------------------------------------------===//

def MoE_DispatchPlanOp : MoE_Op<"dispatch_plan", [Pure,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>]> {
  let summary = "expert-major dispatch order, per-expert counts and capacity";
  let description = [{
    Given each token's ranked expert choices `ids[T, C]` and their combine
    weights `weights[T, C]`, computes where every (token, choice) goes:

    - `counts[E]`: assignments each expert receives (after capacity);
    - `offsets[E+1]`: exclusive prefix sum of `counts`, so expert `e` owns
      slots `offsets[e] ..< offsets[e+1]` of the expert-major order;
    - `token_ids[T·top_k]`: the token of each slot, expert-major and in
      token order within an expert; unused slots hold `-1`;
    - `slot_weights[T·top_k]`: the combine weight of each slot (`0` where
      unused);
    - `dropped`: the number of assignments that found no room.

    Without `capacity_factor`, `capacity_tokens` or `capacity_fraction` the
    plan is dropless and `C` must equal `top_k`. With one of them, each
    expert holds `ceil(capacity_factor · T · top_k / E)`, `capacity_tokens`
    (Switch's fixed `expert_capacity`) or `ceil(capacity_fraction · T)`
    (NLLB-MoE's `moe_eval_capacity_token_fraction`) assignments, at most
    `T · top_k`, filled choice by choice (every token's first choice before
    any token's second, as in GShard) in `priority` order: `token_order`, or
    `batch_prioritized` (V-MoE: tokens by descending first-choice weight,
    ties by token index). An assignment that finds its expert full is
    dropped (`overflow(drop)`), or (`overflow(next_choice)`) moves to the
    token's next-ranked choice in columns `top_k ..< C` that still has room,
    and is dropped if none has. With `renormalize` (NLLB-MoE), each token's
    kept weights are then divided by their sum (at least 2^-23).

    ```mlir
    %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
        experts(8) top_k(2) capacity(1.25) overflow(drop) priority(token_order)
        : tensor<?x2xi32>, tensor<?x2xf32>
        -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
    %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
        experts(8) top_k(2) capacity(tokens 64) overflow(drop) priority(token_order)
        : tensor<?x2xi32>, tensor<?x2xf32>
        -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
    %counts, %offsets, %tokens, %slot_w, %dropped = moe.dispatch_plan %ids, %w
        experts(8) top_k(2) capacity(fraction 1.0) overflow(drop)
        priority(token_order) renormalize
        : tensor<?x2xi32>, tensor<?x2xf32>
        -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xf32>, tensor<i32>
    ```
  }];
  let arguments = (ins
    MoE_I32Tensor:$ids, MoE_F32Tensor:$weights,
    ConfinedAttr<I64Attr, [IntPositive]>:$num_experts,
    ConfinedAttr<I64Attr, [IntPositive]>:$top_k,
    OptionalAttr<F64Attr>:$capacity_factor,
    OptionalAttr<I64Attr>:$capacity_tokens,
    OptionalAttr<F64Attr>:$capacity_fraction,
    DefaultValuedAttr<MoE_OverflowPolicyAttr, "OverflowPolicy::drop">:$overflow,
    DefaultValuedAttr<MoE_DispatchPriorityAttr, "DispatchPriority::token_order">:$priority,
    UnitAttr:$renormalize);
  let results = (outs MoE_I32Tensor:$counts, MoE_I32Tensor:$offsets,
                      MoE_I32Tensor:$token_ids, MoE_F32Tensor:$slot_weights,
                      MoE_I32Scalar:$dropped);
  let assemblyFormat = [{
    $ids `,` $weights `experts` `(` $num_experts `)` `top_k` `(` $top_k `)`
    custom<Capacity>($capacity_factor, $capacity_tokens, $capacity_fraction,
                     $overflow, $priority, $renormalize)
    attr-dict `:` type($ids) `,` type($weights) `->` type($counts) `,`
      type($offsets) `,` type($token_ids) `,` type($slot_weights) `,`
      type($dropped)
  }];
  let hasVerifier = 1;
  let hasCanonicalizeMethod = 1;
  let extraClassDeclaration = [{
    bool hasCapacity() {
      return getCapacityFactor().has_value() ||
             getCapacityTokens().has_value() ||
             getCapacityFraction().has_value();
    }
  }];
}

def MoE_GatherOp : MoE_DPSOp<"gather"> {
  let summary = "permute token rows into expert-major order";
  let description = [{
    `result[s, :] = input[token_ids[s], :]` for every slot `s`, and `0` where
    `token_ids[s] < 0` (unused slots). The init is overwritten. With
    `scale` (`[S]`, Llama 4's router score on the expert input) each row is
    multiplied by `scale[s]`.

    ```mlir
    %rows = moe.gather ins(%x, %tokens : tensor<?x64xf32>, tensor<?xi32>)
                       outs(%r0 : tensor<?x64xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, MoE_I32Tensor:$token_ids,
                       Optional<MoE_F32Tensor>:$scale, MoE_F32Tensor:$init);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    `ins` `(` $input `,` $token_ids `:` type($input) `,` type($token_ids) `)`
    (`scale` `(` $scale^ `:` type($scale) `)`)?
    `outs` `(` $init `:` type($init) `)` attr-dict `->` type($result)
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() { return getInitMutable(); }
  }];
}

def MoE_CombineOp : MoE_DPSOp<"combine"> {
  let summary = "weighted scatter-add of expert rows back to their tokens";
  let description = [{
    `result = init`, then `result[token_ids[s], :] += slot_weights[s] ·
    expert_rows[s, :]` for every used slot (`token_ids[s] >= 0`). The sum
    for a token is formed in a fixed order, so the result does not depend
    on how the work is split.

    ```mlir
    %out = moe.combine ins(%y, %tokens, %slot_w : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>)
                       outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$expert_rows, MoE_I32Tensor:$token_ids,
                       MoE_F32Tensor:$slot_weights, MoE_F32Tensor:$init);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    `ins` `(` $expert_rows `,` $token_ids `,` $slot_weights `:`
      type($expert_rows) `,` type($token_ids) `,` type($slot_weights) `)`
    `outs` `(` $init `:` type($init) `)` attr-dict `->` type($result)
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() { return getInitMutable(); }
  }];
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

def MoE_ExpertFFNOp : MoE_DPSOp<"expert_ffn", [AttrSizedOperandSegments]> {
  let summary = "grouped expert FFN over expert-major row segments";
  let description = [{
    Rows `offsets[e] ..< offsets[e+1]` of `rows[S, D]` belong to expert `e`
    (`offsets` is `[E+1]`); each is replaced by
    `init + w2_e · (act(w1_e · r) ⊙ (w3_e · r))` for the gated activations
    (`swiglu`, `geglu`: the `up` weight `w3` is required) or
    `init + w2_e · act(w1_e · r)` otherwise. Rows from `offsets[E]` on are
    left as `init`. `w1, w3` are `[E, F, D]`, `w2` is `[E, D, F]`.
    GELU is the exact erf form; SiLU is `z·σ(z)`.

    SwiGLU options (activation `swiglu` only; clamped SwiGLU of GPT-OSS,
    MiniMax-M3, GLM5-Next, HY-V4, Step3.7): with `g = w1_e · r` and
    `u = w3_e · r`, the hidden value is
    `g'·σ(swiglu_alpha·g') ⊙ (clamp(u, -L, L) + swiglu_up_offset)` with
    `g' = min(g, L)` for `L = swiglu_limit`; with
    `swiglu_clamp_after_activation` the minimum is taken after the
    nonlinearity instead: `min(g·σ(swiglu_alpha·g), L)`. Without a limit
    nothing is clamped; `swiglu_alpha` defaults to 1, `swiglu_up_offset` to 0.

    Expert biases (GPT-OSS, NLLB-MoE): `hidden_bias(b1)` `[E, F]` is added to
    `w1_e · r` and `up_bias(b3)` `[E, F]` (gated activations) to `w3_e · r`
    before the activation, `out_bias(b2)` `[E, D]` to `w2_e · h`; all f32.
    `scale(s)` `[E]` (f32, Gemma 4's per-expert scale) multiplies the expert's
    output: `init + s_e · (w2_e · h [+ b2_e])`.

    ```mlir
    %y = moe.expert_ffn swiglu
        ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
        up(%w3 : tensor<8x128x64xbf16>)
        outs(%y0 : tensor<?x64xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$rows, MoE_I32Tensor:$offsets,
                       MoE_WeightTensor:$w1, MoE_WeightTensor:$w2,
                       Optional<MoE_WeightTensor>:$w3,
                       Optional<MoE_F32Tensor>:$b1,
                       Optional<MoE_F32Tensor>:$b3,
                       Optional<MoE_F32Tensor>:$b2,
                       Optional<MoE_F32Tensor>:$scale, MoE_F32Tensor:$init,
                       MoE_ActivationAttr:$activation,
                       OptionalAttr<F64Attr>:$swiglu_limit,
                       DefaultValuedAttr<F64Attr, "1.0">:$swiglu_alpha,
                       DefaultValuedAttr<F64Attr, "0.0">:$swiglu_up_offset,
                       UnitAttr:$swiglu_clamp_after_activation);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    custom<Keyword>($activation)
    `ins` `(` $rows `,` $offsets `,` $w1 `,` $w2 `:` type($rows) `,`
      type($offsets) `,` type($w1) `,` type($w2) `)`
    (`up` `(` $w3^ `:` type($w3) `)`)?
    (`hidden_bias` `(` $b1^ `:` type($b1) `)`)?
    (`up_bias` `(` $b3^ `:` type($b3) `)`)?
    (`out_bias` `(` $b2^ `:` type($b2) `)`)?
    (`scale` `(` $scale^ `:` type($scale) `)`)?
    `outs` `(` $init `:` type($init) `)` attr-dict `->` type($result)
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() { return getInitMutable(); }
  }];
}

def MoE_SharedExpertOp : MoE_DPSOp<"shared_expert", [AttrSizedOperandSegments]> {
  let summary = "always-on (shared) expert MLP, optionally sigmoid-gated";
  let description = [{
    `result[t] = init[t] + g_t · w2 · (act(w1 · x_t) ⊙ (w3 · x_t))` (gated
    activations; `act(w1 · x_t)` alone otherwise) with `g_t = σ(gate · x_t)`
    when the `gate` weight `[1, D]` is given (Qwen-MoE) and `1` otherwise.
    `w1, w3` are `[Fs, D]`, `w2` is `[D, Fs]`. The SwiGLU options are those
    of `moe.expert_ffn`.

    ```mlir
    %out = moe.shared_expert swiglu
        ins(%x, %w1, %w2 : tensor<?x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>)
        up(%w3 : tensor<256x64xf32>) gate(%g : tensor<1x64xf32>)
        outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, MoE_WeightTensor:$w1,
                       MoE_WeightTensor:$w2, Optional<MoE_WeightTensor>:$w3,
                       Optional<MoE_WeightTensor>:$gate, MoE_F32Tensor:$init,
                       MoE_ActivationAttr:$activation,
                       OptionalAttr<F64Attr>:$swiglu_limit,
                       DefaultValuedAttr<F64Attr, "1.0">:$swiglu_alpha,
                       DefaultValuedAttr<F64Attr, "0.0">:$swiglu_up_offset,
                       UnitAttr:$swiglu_clamp_after_activation);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    custom<Keyword>($activation)
    `ins` `(` $input `,` $w1 `,` $w2 `:` type($input) `,` type($w1) `,`
      type($w2) `)`
    (`up` `(` $w3^ `:` type($w3) `)`)?
    (`gate` `(` $gate^ `:` type($gate) `)`)?
    `outs` `(` $init `:` type($init) `)` attr-dict `->` type($result)
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() { return getInitMutable(); }
  }];
}

def MoE_BatchNormOp : MoE_Op<"batch_norm", [Pure, DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>,
    AllTypesMatch<["input", "result"]>,
    AllTypesMatch<["mean", "variance", "scale", "shift"]>]> {
  let summary = "inference BatchNorm: per-channel affine with running stats";
  let description = [{
    `result[t, c] = (input[t, c] - mean[c]) / sqrt(var[c] + epsilon) ·
    scale[c] + shift[c]`: the PEER query BatchNorm at inference.
    The four per-channel parameters are `f32` tensors of shape `[C]`.

    ```mlir
    %qn = moe.batch_norm %q, %mean, %var, %scale, %shift {epsilon = 1.0e-05 : f64}
        : tensor<?x256xf32>, tensor<256xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, MoE_F32Tensor:$mean,
                       MoE_F32Tensor:$variance, MoE_F32Tensor:$scale,
                       MoE_F32Tensor:$shift,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $mean `,` $variance `,` $scale `,` $shift attr-dict `:`
      type($input) `,` type($mean)
  }];
  let hasVerifier = 1;
}

def MoE_LayerNormOp : MoE_Op<"layer_norm", [Pure, DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>,
    AllTypesMatch<["input", "result"]>,
    AllTypesMatch<["scale", "shift"]>]> {
  let summary = "LayerNorm over each row's channels, with an affine";
  let description = [{
    Per row `t` of `C` channels, with the mean and the biased variance of
    the row summed over `c` in order:
    `mean = Σ_c input[t, c] / C`, `var = Σ_c (input[t, c] - mean)² / C`,
    `result[t, c] = (input[t, c] - mean) / sqrt(var + epsilon) · scale[c] +
    shift[c]` (PyTorch's `nn.LayerNorm(C)`): the PKM query LayerNorm.
    Each row is normalised on its own, so a token's result does not depend
    on the batch. `scale` and `shift` are `f32` tensors of shape `[C]`.

    ```mlir
    %qn = moe.layer_norm %q, %scale, %shift {epsilon = 1.0e-05 : f64}
        : tensor<?x256xf32>, tensor<256xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, MoE_F32Tensor:$scale,
                       MoE_F32Tensor:$shift,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $scale `,` $shift attr-dict `:` type($input) `,` type($scale)
  }];
  let hasVerifier = 1;
}

def MoE_SingleNeuronExpertsOp
    : MoE_DPSOp<"single_neuron_experts"> {
  let summary = "PEER/PKM retrieved single-neuron experts, weighted and summed";
  let description = [{
    For token `t` with retrieved expert ids `ids[t, h, j]` and weights
    `weights[t, h, j]` (`[T, heads, k]`):

    - PEER (with `expert_in` `u[N, D]` and an activation σ):
      `result[t] = init[t] + Σ_{h,j} w · σ(u_iᵀ x_t) · v_i`;
    - PKM (no `expert_in`, no activation):
      `result[t] = init[t] + Σ_{h,j} w · v_i`;

    with `i = ids[t, h, j]` and `v = expert_out[N, D]`. The activation is one
    of `gelu`, `relu`, `silu`.

    ```mlir
    %out = moe.single_neuron_experts
        ins(%x, %ids, %w, %v : tensor<?x64xf32>, tensor<?x8x16xi32>, tensor<?x8x16xf32>, tensor<1024x64xf32>)
        in_proj(%u : tensor<1024x64xf32>, gelu)
        outs(%acc : tensor<?x64xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input, MoE_I32Tensor:$ids,
                       MoE_F32Tensor:$weights, MoE_WeightTensor:$expert_out,
                       Optional<MoE_WeightTensor>:$expert_in,
                       MoE_F32Tensor:$init,
                       OptionalAttr<MoE_ActivationAttr>:$activation);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    `ins` `(` $input `,` $ids `,` $weights `,` $expert_out `:` type($input)
      `,` type($ids) `,` type($weights) `,` type($expert_out) `)`
    (`in_proj` `(` $expert_in^ `:` type($expert_in) `,` custom<Keyword>($activation) `)`)?
    `outs` `(` $init `:` type($init) `)` attr-dict `->` type($result)
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() { return getInitMutable(); }
  }];
}

//===----------------------------------------------------------------------===//
// MH-MoE token split / merge
//===----------------------------------------------------------------------===//

def MoE_TokenSplitOp : MoE_Op<"token_split", [Pure, DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>]> {
  let summary = "MH-MoE: split each token into `heads` sub-tokens";
  let description = [{
    `[T, D] -> [T·heads, D/heads]`: sub-token `t·heads + h` is the slice
    `input[t, h·D/heads ..< (h+1)·D/heads]` (a row-major reshape).

    ```mlir
    %sub = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input,
                       ConfinedAttr<I64Attr, [IntPositive]>:$heads);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    $input `heads` `(` $heads `)` attr-dict `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

def MoE_TokenMergeOp : MoE_Op<"token_merge", [Pure, DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>]> {
  let summary = "MH-MoE: merge `heads` sub-tokens back into each token";
  let description = [{
    `[T·heads, D/heads] -> [T, D]`, the inverse of `moe.token_split`.

    ```mlir
    %x = moe.token_merge %sub heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor:$input,
                       ConfinedAttr<I64Attr, [IntPositive]>:$heads);
  let results = (outs MoE_F32Tensor:$result);
  let assemblyFormat = [{
    $input `heads` `(` $heads `)` attr-dict `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Auxiliary losses
//===----------------------------------------------------------------------===//

def MoE_AuxLossOp : MoE_Op<"aux_loss", [Pure, AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>]> {
  let summary = "auxiliary router loss as an f32 scalar";
  let description = [{
    From router `logits[T, E]`:

    - `load_balance` (Switch): `coefficient · E · Σ_i f_i · P_i`, where
      `f_i` is the fraction of the `T·k` assignments in `ids[T, k]` that
      chose expert `i` and `P_i` the mean over tokens of the router
      probability of expert `i` (`score` of the logits; sigmoid scores are
      normalised to sum 1 per token; `sparsemixer` weights are no
      probabilities: a sparsemixer router's losses take `softmax`);
    - `importance` (Shazeer): `coefficient · CV(importance)²`, where
      `importance_i = Σ_t` the combine weight token `t` gives expert `i`
      (from `ids` and `weights`) and CV is the population coefficient of
      variation;
    - `z_loss`: `coefficient · mean_t(logsumexp(logits_t)²)`.

    ```mlir
    %lb = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>)
        : tensor<?x8xf32> -> tensor<f32>
    ```
  }];
  let arguments = (ins MoE_AuxLossKindAttr:$kind, MoE_F32Tensor:$logits,
                       Optional<MoE_I32Tensor>:$ids,
                       Optional<MoE_F32Tensor>:$weights,
                       DefaultValuedAttr<MoE_ScoreFunctionAttr,
                                         "ScoreFunction::softmax">:$score,
                       DefaultValuedAttr<F64Attr, "1.0">:$coefficient);
  let results = (outs MoE_F32Scalar:$result);
  let assemblyFormat = [{
    custom<Keyword>($kind) $logits (`ids` `(` $ids^ `:` type($ids) `)`)?
    (`weights` `(` $weights^ `:` type($weights) `)`)?
    attr-dict `:` type($logits) `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Lowering-internal ops
//===----------------------------------------------------------------------===//

def MoE_WarpMMAOp : MoE_Op<"warp_mma", [Pure]> {
  let summary = "one lane's registers of a warp-wide 16x8x16 bf16 tensor-core "
                "multiply-accumulate";
  let description = [{
    The lane-level view of PTX `mma.sync.aligned.m16n8k16.row.col.f32.bf16.
    bf16.f32`: the 32 lanes of a warp together compute `D = A·B + C` with
    `A` 16×16 and `B` 16×8 bf16, `C`/`D` 16×8 f32. Each lane passes its
    registers: `a0..a3` and `b0, b1` each hold two bf16 (the lower `k` in the
    low half), `c0..c3` and the results `d0..d3` one f32, in the PTX ISA's
    fragment layout (lane = 4·g + t: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..],
    a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]; b0 = B[2t..2t+1][g], b1 =
    B[2t+8..][g]; c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..]).

    Made by `convert-moe-to-gpu{tensor-cores=mma}` in parallel loops whose
    work items come in whole warps, and lowered to `nvvm.mma.sync` in the
    kernels by `convert-moe-warp-mma-to-nvvm`. It touches no memory (Pure),
    but it reads the other lanes' registers: every lane of the warp must
    execute it together, so it is never placed under control flow that
    depends on the lane.

    ```mlir
    %d:4 = moe.warp_mma a(%a0, %a1, %a2, %a3) b(%b0, %b1)
        c(%c0, %c1, %c2, %c3)
    ```
  }];
  let arguments = (ins I32:$a0, I32:$a1, I32:$a2, I32:$a3, I32:$b0, I32:$b1,
                       F32:$c0, F32:$c1, F32:$c2, F32:$c3);
  let results = (outs F32:$d0, F32:$d1, F32:$d2, F32:$d3);
  let assemblyFormat = [{
    `a` `(` $a0 `,` $a1 `,` $a2 `,` $a3 `)` `b` `(` $b0 `,` $b1 `)`
    `c` `(` $c0 `,` $c1 `,` $c2 `,` $c3 `)` attr-dict
  }];
}

#endif // MOE_DIALECT_MOE_IR_MOEOPS_TD
