//===- MoEOps.cpp - op interfaces, folders and helpers of the moe dialect -===//

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/OpImplementation.h"
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
  SMLoc loc = parser.getCurrentLocation();
  StringRef keyword;
  if (parser.parseKeyword(&keyword))
    return failure();
  std::optional<EnumT> value = symbolizeEnum<EnumT>(keyword);
  if (!value) {
    // The dialect's enum cases are numbered 0, 1, ... without gaps.
    SmallVector<StringRef> spellings;
    for (uint32_t v = 0; !stringifyEnum(static_cast<EnumT>(v)).empty(); ++v)
      spellings.push_back(stringifyEnum(static_cast<EnumT>(v)));
    return parser.emitError(loc)
           << "expected one of {" << llvm::join(spellings, ", ") << "}, got '"
           << keyword << "'";
  }
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

int64_t RouteOp::getNumChoices() { return getIds().getType().getShape()[1]; }

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

#define GET_OP_CLASSES
#include "moe/Dialect/MoE/IR/MoEOps.cpp.inc"
