//===- MoEOps.cpp - op interfaces, folders and helpers of the moe dialect -===//

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/StringExtras.h"

using namespace mlir;
using namespace mlir::moe;

//===----------------------------------------------------------------------===//
// custom<Keyword>: enum attributes printed as bare keywords (`softmax`), with
// the unknown-keyword error naming the accepted spellings.
//===----------------------------------------------------------------------===//

template <typename AttrT>
static ParseResult parseKeyword(OpAsmParser &parser, AttrT &attr) {
  using EnumT = decltype(std::declval<AttrT>().getValue());
  auto expectedOneOf = [&](SMLoc loc) {
    // The dialect's enum cases are numbered 0, 1, ... without gaps.
    SmallVector<StringRef> spellings;
    for (uint32_t v = 0; !stringifyEnum(static_cast<EnumT>(v)).empty(); ++v)
      spellings.push_back(stringifyEnum(static_cast<EnumT>(v)));
    return parser.emitError(loc)
           << "expected one of {" << llvm::join(spellings, ", ") << "}";
  };
  SMLoc loc = parser.getCurrentLocation();
  StringRef keyword;
  if (parser.parseOptionalKeyword(&keyword))
    return expectedOneOf(loc);
  std::optional<EnumT> value = symbolizeEnum<EnumT>(keyword);
  if (!value)
    return expectedOneOf(loc) << ", got '" << keyword << "'";
  attr = AttrT::get(parser.getContext(), *value);
  return success();
}

// A default-valued attribute may be absent from the op's properties; every
// default-valued enum of this dialect defaults to its case 0.
template <typename AttrT>
static void printKeyword(OpAsmPrinter &printer, Operation *, AttrT attr) {
  using EnumT = decltype(std::declval<AttrT>().getValue());
  printer << stringifyEnum(attr ? attr.getValue() : static_cast<EnumT>(0));
}

//===----------------------------------------------------------------------===//
// custom<Capacity>: the optional capacity of moe.dispatch_plan,
// `capacity(1.25)` (a factor), `capacity(tokens 64)` (fixed) or
// `capacity(fraction 1.0)` (of the tokens), then its `overflow(...)`,
// `priority(...)` and an optional `renormalize`; nothing when dropless.
//===----------------------------------------------------------------------===//

static ParseResult parseCapacity(OpAsmParser &parser, FloatAttr &factor,
                                 IntegerAttr &tokens, FloatAttr &fraction,
                                 OverflowPolicyAttr &overflow,
                                 DispatchPriorityAttr &priority,
                                 UnitAttr &renormalize) {
  if (parser.parseOptionalKeyword("capacity"))
    return success();
  if (parser.parseLParen())
    return failure();
  Builder &builder = parser.getBuilder();
  if (succeeded(parser.parseOptionalKeyword("tokens"))) {
    int64_t count = 0;
    if (parser.parseInteger(count))
      return failure();
    tokens = builder.getI64IntegerAttr(count);
  } else {
    bool isFraction = succeeded(parser.parseOptionalKeyword("fraction"));
    double value = 0.0;
    if (parser.parseFloat(value))
      return failure();
    (isFraction ? fraction : factor) = builder.getF64FloatAttr(value);
  }
  if (parser.parseRParen() || parser.parseKeyword("overflow") ||
      parser.parseLParen() || parseKeyword(parser, overflow) ||
      parser.parseRParen() || parser.parseKeyword("priority") ||
      parser.parseLParen() || parseKeyword(parser, priority) ||
      parser.parseRParen())
    return failure();
  if (succeeded(parser.parseOptionalKeyword("renormalize")))
    renormalize = builder.getUnitAttr();
  return success();
}

static void printCapacity(OpAsmPrinter &printer, Operation *op,
                          FloatAttr factor, IntegerAttr tokens,
                          FloatAttr fraction, OverflowPolicyAttr overflow,
                          DispatchPriorityAttr priority,
                          UnitAttr renormalize) {
  if (!factor && !tokens && !fraction)
    return;
  printer << "capacity(";
  if (factor) {
    printer.printAttributeWithoutType(factor);
  } else if (fraction) {
    printer << "fraction ";
    printer.printAttributeWithoutType(fraction);
  } else {
    printer << "tokens " << tokens.getInt();
  }
  printer << ") overflow(";
  printKeyword(printer, op, overflow);
  printer << ") priority(";
  printKeyword(printer, op, priority);
  printer << ")";
  if (renormalize)
    printer << " renormalize";
}

//===----------------------------------------------------------------------===//
// Result names: readable SSA names in printed IR.
//===----------------------------------------------------------------------===//

void LinearOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "proj");
}
void RouteOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getWeights(), "weights");
  setNameFn(getIds(), "ids");
}
void TopKOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getValues(), "values");
  setNameFn(getIndices(), "indices");
}
void ProductKeyTopKOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getWeights(), "pk_weights");
  setNameFn(getIds(), "pk_ids");
}
void DispatchPlanOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getCounts(), "counts");
  setNameFn(getOffsets(), "offsets");
  setNameFn(getTokenIds(), "token_ids");
  setNameFn(getSlotWeights(), "slot_weights");
  setNameFn(getDropped(), "dropped");
}
void GatherOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "rows");
}
void CombineOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "combined");
}
void ExpertFFNOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "expert_rows");
}
void SharedExpertOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "shared");
}
void SingleNeuronExpertsOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "neurons");
}

// The verifier requires a static weights dim 1; ids may leave it dynamic.
void RMSNormOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "normed");
}
void SoftcapOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "capped");
}
void BatchNormOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "normed");
}
void LayerNormOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "normed");
}
void TokenSplitOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "sub_tokens");
}
void TokenMergeOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "merged");
}
void AuxLossOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), stringifyAuxLossKind(getKind()));
}

int64_t RouteOp::getNumChoices() {
  return getWeights().getType().getShape()[1];
}

//===----------------------------------------------------------------------===//
// Folders
//===----------------------------------------------------------------------===//

// split(merge(y)) and merge(split(x)) with the same head count are the
// identity; one head is a no-op reshape.
template <typename InverseOp, typename OpTy>
static OpFoldResult foldTokenReshape(OpTy op) {
  Value input = op.getInput();
  if (op.getHeads() == 1 && input.getType() == op.getType())
    return input;
  auto inverse = input.getDefiningOp<InverseOp>();
  if (inverse && inverse.getHeads() == op.getHeads() &&
      inverse.getInput().getType() == op.getType())
    return inverse.getInput();
  return {};
}

OpFoldResult TokenSplitOp::fold(FoldAdaptor) {
  return foldTokenReshape<TokenMergeOp>(*this);
}

OpFoldResult TokenMergeOp::fold(FoldAdaptor) {
  return foldTokenReshape<TokenSplitOp>(*this);
}

//===----------------------------------------------------------------------===//
// Canonicalization
//===----------------------------------------------------------------------===//

// Keeping every group masks no expert: plain top-k routing. The group options
// go back to their defaults so the custom form prints without the group.
LogicalResult RouteOp::canonicalize(RouteOp op, PatternRewriter &rewriter) {
  if (op.getGroups() == 1 || op.getTopkGroups() != op.getGroups())
    return failure();
  rewriter.modifyOpInPlace(op, [&] {
    op.setGroups(1);
    op.setTopkGroups(1);
    op.setGroupScore(GroupScore::max);
  });
  return success();
}

// next_choice without fallback columns (ids has top_k columns) has nowhere to
// move an assignment that overflows: it drops it.
LogicalResult DispatchPlanOp::canonicalize(DispatchPlanOp op,
                                           PatternRewriter &rewriter) {
  if (!op.hasCapacity() || op.getOverflow() != OverflowPolicy::next_choice ||
      op.getIds().getType().getDimSize(1) != static_cast<int64_t>(op.getTopK()))
    return failure();
  rewriter.modifyOpInPlace(op, [&] { op.setOverflow(OverflowPolicy::drop); });
  return success();
}

#define GET_OP_CLASSES
#include "moe/Dialect/MoE/IR/MoEOps.cpp.inc"
