//===- MoEDialect.td - the moe dialect definition ----------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_IR_MOEDIALECT_TD
#define MOE_DIALECT_MOE_IR_MOEDIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Mixture-of-Experts layers as tensor-level ops";
  let description = [{
    The `moe` dialect models the pieces of a Mixture-of-Experts layer as ops
    with tensor value semantics, so that passes can see and fuse them:
    router projections, routing (score function, order, renormalisation,
    scaling, selection bias, group-limited routing, noisy gating), top-k,
    product-key retrieval (PEER/PKM), the dispatch plan (per-expert counts,
    offsets, expert-sorted token order, capacity and overflow), gather and
    weighted scatter-combine, grouped expert FFNs, single-neuron experts,
    MH-MoE token split/merge and auxiliary losses.

    Ops that later passes tile use destination-passing style: their `outs`
    operands give the shape of, and (where documented) the initial value
    accumulated into, the results.

    Activations are always `f32`; weights may be `f32`, `bf16` or `f16` and
    are accumulated in `f32`. Weights use the PyTorch `nn.Linear` layout
    `[out, in]`, stacked over experts.
  }];
  let useDefaultAttributePrinterParser = 1;
  let dependentDialects = ["::mlir::tensor::TensorDialect"];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOE_DIALECT_MOE_IR_MOEDIALECT_TD
