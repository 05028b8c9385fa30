//===- MoEEnums.td - layer options of the moe dialect ------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_IR_MOEENUMS_TD
#define MOE_DIALECT_MOE_IR_MOEENUMS_TD

include "moe/Dialect/MoE/IR/MoEDialect.td"
include "mlir/IR/EnumAttr.td"

def MoE_ScoreFunction : I32EnumAttr<"ScoreFunction",
    "function turning router logits into expert scores", [
      I32EnumAttrCase<"softmax", 0>,
      I32EnumAttrCase<"sigmoid", 1>,
      I32EnumAttrCase<"sqrt_softplus", 2>,
      I32EnumAttrCase<"sparsemixer", 3>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_ScoreFunctionAttr : EnumAttr<MoE_Dialect, MoE_ScoreFunction, "score">;

def MoE_RoutingOrder : I32EnumAttr<"RoutingOrder",
    "whether scores are computed before or after the top-k selection", [
      I32EnumAttrCase<"score_then_topk", 0>,
      I32EnumAttrCase<"topk_then_score", 1>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_RoutingOrderAttr : EnumAttr<MoE_Dialect, MoE_RoutingOrder, "order">;

def MoE_GroupScore : I32EnumAttr<"GroupScore",
    "how an expert group is ranked in group-limited routing", [
      I32EnumAttrCase<"max", 0>,
      I32EnumAttrCase<"top2_sum", 1>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_GroupScoreAttr : EnumAttr<MoE_Dialect, MoE_GroupScore, "group_score">;

def MoE_Activation : I32EnumAttr<"Activation",
    "expert activation; swiglu, geglu and geglu_tanh are gated (use the w3 "
    "projection)", [
      I32EnumAttrCase<"swiglu", 0>,
      I32EnumAttrCase<"geglu", 1>,
      I32EnumAttrCase<"gelu", 2>,
      I32EnumAttrCase<"relu", 3>,
      I32EnumAttrCase<"silu", 4>,
      I32EnumAttrCase<"gelu_tanh", 5>,
      I32EnumAttrCase<"geglu_tanh", 6>,
      I32EnumAttrCase<"relu2", 7>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_ActivationAttr : EnumAttr<MoE_Dialect, MoE_Activation, "activation">;

def MoE_OverflowPolicy : I32EnumAttr<"OverflowPolicy",
    "what happens to an assignment whose expert is full", [
      I32EnumAttrCase<"drop", 0>,
      I32EnumAttrCase<"next_choice", 1>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_OverflowPolicyAttr
    : EnumAttr<MoE_Dialect, MoE_OverflowPolicy, "overflow">;

def MoE_DispatchPriority : I32EnumAttr<"DispatchPriority",
    "order in which tokens claim expert capacity", [
      I32EnumAttrCase<"token_order", 0>,
      I32EnumAttrCase<"batch_prioritized", 1>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_DispatchPriorityAttr
    : EnumAttr<MoE_Dialect, MoE_DispatchPriority, "priority">;

def MoE_AuxLossKind : I32EnumAttr<"AuxLossKind", "auxiliary router loss", [
      I32EnumAttrCase<"load_balance", 0>,
      I32EnumAttrCase<"importance", 1>,
      I32EnumAttrCase<"z_loss", 2>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_AuxLossKindAttr : EnumAttr<MoE_Dialect, MoE_AuxLossKind, "aux_loss">;

#endif // MOE_DIALECT_MOE_IR_MOEENUMS_TD
