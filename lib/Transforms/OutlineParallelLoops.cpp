//===- OutlineParallelLoops.cpp - scf.forall bodies to parallel launches --===//
//
// The runtime's thread pool runs a function over a flat range [0, n), so each
// outermost scf.forall is linearised: its body moves into a function of one
// index that recovers the induction variables, and the loop becomes a call of
// a launch declaration that moe-lower-parallel-launches binds to the runtime.
// Loops nested in a body are outlined from it the same way.
//
//===----------------------------------------------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/RegionUtils.h"

#include "llvm/ADT/SetVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_OUTLINEPARALLELLOOPS
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Constants and their kin are cheaper to recreate in the body than to pass
/// through the runtime's context struct, and keep folding possible there.
bool isRematerializable(Operation *op) {
  return op && op->getNumOperands() == 0 && op->getNumRegions() == 0 &&
         isMemoryEffectFree(op);
}

/// Records the ops a builder creates, to erase those that folding left dead.
struct CreatedOps : public OpBuilder::Listener {
  void notifyOperationInserted(Operation *op,
                               OpBuilder::InsertPoint previous) override {
    ops.push_back(op);
  }
  void eraseDead() {
    for (Operation *op : llvm::reverse(ops))
      if (op->use_empty() && isMemoryEffectFree(op))
        op->erase();
    ops.clear();
  }
  SmallVector<Operation *> ops;
};

/// Index constants at a builder's insertion point, one op per value.
class IndexConstants {
public:
  IndexConstants(OpBuilder &b, Location loc) : b(b), loc(loc) {}

  Value get(int64_t value) {
    Value &constant = cache[value];
    if (!constant)
      constant = arith::ConstantIndexOp::create(b, loc, value);
    return constant;
  }
  Value get(OpFoldResult ofr) {
    if (auto value = dyn_cast<Value>(ofr))
      return value;
    return get(*getConstantIntValue(ofr));
  }

private:
  OpBuilder &b;
  Location loc;
  llvm::DenseMap<int64_t, Value> cache;
};

/// ceil((ub - lb) / step), 0 when negative; step > 0 as scf.forall requires.
OpFoldResult buildTripCount(OpBuilder &b, Location loc,
                            IndexConstants &constants, OpFoldResult lb,
                            OpFoldResult ub, OpFoldResult step) {
  std::optional<int64_t> lbConst = getConstantIntValue(lb);
  std::optional<int64_t> ubConst = getConstantIntValue(ub);
  std::optional<int64_t> stepConst = getConstantIntValue(step);
  if (lbConst && ubConst && stepConst) {
    int64_t extent = std::max<int64_t>(*ubConst - *lbConst, 0);
    return b.getIndexAttr(llvm::divideCeil(extent, *stepConst));
  }
  // No arith.ceildivsi: the LLVM lowering of the CPU pipeline does not expand
  // it. With extent >= 0 and step > 0, (extent + step - 1) / step is exact.
  Value lbV = constants.get(lb);
  Value ubV = constants.get(ub);
  Value stepV = constants.get(step);
  Value zero = constants.get(int64_t(0));
  Value one = constants.get(int64_t(1));
  Value extent = b.createOrFold<arith::MaxSIOp>(
      loc, b.createOrFold<arith::SubIOp>(loc, ubV, lbV), zero);
  Value roundUp = b.createOrFold<arith::SubIOp>(loc, stepV, one);
  return b.createOrFold<arith::DivUIOp>(
      loc, b.createOrFold<arith::AddIOp>(loc, extent, roundUp), stepV);
}

/// A name for a new symbol `<base>_<n>` not in `symbols`, nor with the launch
/// prefix in front.
std::string uniqueBodyName(SymbolTable &symbols, StringRef base,
                           unsigned &counter) {
  while (true) {
    std::string name = (base + "_" + Twine(counter++)).str();
    if (!symbols.lookup(name) &&
        !symbols.lookup((kParallelLaunchPrefix + name).str()))
      return name;
  }
}

struct OutlineParallelLoopsPass
    : public moe::impl::OutlineParallelLoopsBase<OutlineParallelLoopsPass> {
  void runOnOperation() override;

  LogicalResult outline(scf::ForallOp forall, func::FuncOp parent,
                        OpBuilder &moduleBuilder, SymbolTable &symbols,
                        unsigned &counter);
};

LogicalResult OutlineParallelLoopsPass::outline(scf::ForallOp forall,
                                                func::FuncOp parent,
                                                OpBuilder &moduleBuilder,
                                                SymbolTable &symbols,
                                                unsigned &counter) {
  MLIRContext *ctx = &getContext();
  Location loc = forall.getLoc();
  int64_t rank = forall.getRank();
  SmallVector<OpFoldResult> lbs = forall.getMixedLowerBound();
  SmallVector<OpFoldResult> ubs = forall.getMixedUpperBound();
  SmallVector<OpFoldResult> steps = forall.getMixedStep();
  for (OpFoldResult step : steps) {
    std::optional<int64_t> stepConst = getConstantIntValue(step);
    if (stepConst && *stepConst <= 0)
      return forall.emitOpError("expects positive steps, found ") << *stepConst;
  }

  // Trip counts and their product, at the loop, in the parent.
  OpBuilder b(forall);
  CreatedOps createdAtLoop;
  b.setListener(&createdAtLoop);
  IndexConstants constantsAtLoop(b, loc);
  SmallVector<OpFoldResult> trips;
  for (int64_t d = 0; d < rank; ++d)
    trips.push_back(
        buildTripCount(b, loc, constantsAtLoop, lbs[d], ubs[d], steps[d]));
  OpFoldResult total = b.getIndexAttr(1);
  for (OpFoldResult trip : trips) {
    std::optional<int64_t> totalConst = getConstantIntValue(total);
    std::optional<int64_t> tripConst = getConstantIntValue(trip);
    if (totalConst && tripConst)
      total = b.getIndexAttr(*totalConst * *tripConst);
    else if (totalConst == 1)
      total = trip;
    else
      total = b.createOrFold<arith::MulIOp>(loc, constantsAtLoop.get(total),
                                            constantsAtLoop.get(trip));
  }

  // What the body needs from above: the values its ops use, then what the
  // delinearisation needs (bounds, steps, inner trip counts).
  llvm::SetVector<Value> usedAbove;
  getUsedValuesDefinedAbove(forall.getRegion(), usedAbove);
  auto addIfValue = [&](OpFoldResult ofr) {
    if (auto v = dyn_cast<Value>(ofr))
      usedAbove.insert(v);
  };
  for (int64_t d = 0; d < rank; ++d) {
    addIfValue(lbs[d]);
    addIfValue(steps[d]);
    if (d > 0)
      addIfValue(trips[d]);
  }
  SmallVector<Value> captured;
  llvm::SetVector<Operation *> cloned;
  for (Value v : usedAbove) {
    if (isRematerializable(v.getDefiningOp()))
      cloned.insert(v.getDefiningOp());
    else
      captured.push_back(v);
  }

  // The body: func.func private @<parent>_parallel_<N>(%i, captured...).
  std::string bodyName = uniqueBodyName(
      symbols, (parent.getSymName() + "_parallel").str(), counter);
  SmallVector<Type> argTypes = {b.getIndexType()};
  llvm::append_range(argTypes, ValueRange(captured).getTypes());
  auto fnType = FunctionType::get(ctx, argTypes, {});

  auto body = func::FuncOp::create(moduleBuilder, loc, bodyName, fnType);
  body.setPrivate();
  symbols.insert(body);
  auto launch = func::FuncOp::create(
      moduleBuilder, loc, (kParallelLaunchPrefix + bodyName).str(), fnType);
  launch.setPrivate();
  symbols.insert(launch);

  Block *entry = body.addEntryBlock();
  OpBuilder bb = OpBuilder::atBlockBegin(entry);
  IRMapping mapping;
  for (auto [value, arg] :
       llvm::zip_equal(captured, entry->getArguments().drop_front()))
    mapping.map(value, arg);
  for (Operation *op : cloned)
    bb.clone(*op, mapping);
  // Folding may leave the delinearisation dead ops; the clones above are
  // used.
  CreatedOps createdInBody;
  bb.setListener(&createdInBody);
  IndexConstants constantsInBody(bb, loc);
  auto materialize = [&](OpFoldResult ofr) -> Value {
    if (auto v = dyn_cast<Value>(ofr))
      return mapping.lookup(v);
    return constantsInBody.get(ofr);
  };

  // Row-major delinearisation: the last dimension varies fastest.
  Value rest = entry->getArgument(0);
  SmallVector<Value> ivs(rank);
  for (int64_t d = rank - 1; d >= 0; --d) {
    Value index = rest;
    if (d > 0) {
      Value trip = materialize(trips[d]);
      index = bb.createOrFold<arith::RemUIOp>(loc, rest, trip);
      rest = bb.createOrFold<arith::DivUIOp>(loc, rest, trip);
    }
    Value scaled =
        bb.createOrFold<arith::MulIOp>(loc, index, materialize(steps[d]));
    ivs[d] = bb.createOrFold<arith::AddIOp>(loc, materialize(lbs[d]), scaled);
  }
  for (auto [iv, value] : llvm::zip_equal(forall.getInductionVars(), ivs))
    mapping.map(iv, value);
  bb.setListener(nullptr);
  for (Operation &op : forall.getBody()->without_terminator())
    bb.clone(op, mapping);
  createdInBody.eraseDead();
  func::ReturnOp::create(bb, loc);

  // A nested loop (a fast kernel's loop inside a token tile) becomes its own
  // launch from the body: the runtime runs it inline on a worker and in
  // parallel when the outer loop had one iteration, and the stack buffers
  // of its body live in its own frame rather than piling up in a loop here.
  SmallVector<scf::ForallOp> nested;
  body.walk<WalkOrder::PreOrder>([&](scf::ForallOp op) {
    nested.push_back(op);
    return WalkResult::skip();
  });
  unsigned nestedCounter = 0;
  for (scf::ForallOp op : nested)
    if (failed(outline(op, body, moduleBuilder, symbols, nestedCounter)))
      return failure();

  SmallVector<Value> operands = {constantsAtLoop.get(total)};
  llvm::append_range(operands, captured);
  func::CallOp::create(b, loc, launch, operands);
  forall.erase();
  createdAtLoop.eraseDead();
  return success();
}

void OutlineParallelLoopsPass::runOnOperation() {
  ModuleOp module = getOperation();
  SmallVector<std::pair<func::FuncOp, SmallVector<scf::ForallOp>>> work;
  for (auto parent : module.getOps<func::FuncOp>()) {
    SmallVector<scf::ForallOp> outermost;
    parent.walk<WalkOrder::PreOrder>([&](scf::ForallOp forall) {
      outermost.push_back(forall);
      return WalkResult::skip();
    });
    if (!outermost.empty())
      work.emplace_back(parent, std::move(outermost));
  }

  // A loop that still yields tensors has not been bufferized: its tasks
  // would write slices of a shared result, which no outlined body can return.
  bool bufferized = true;
  for (auto &[parent, outermost] : work)
    for (scf::ForallOp loop : outermost)
      loop.walk([&](scf::ForallOp forall) {
        if (forall.getOutputs().empty())
          return;
        forall.emitOpError("expects no shared_outs (run after "
                           "bufferization), found ")
            << forall.getOutputs().size();
        bufferized = false;
      });
  if (!bufferized)
    return signalPassFailure();

  SymbolTable symbols(module);
  for (auto &[parent, outermost] : work) {
    // Bodies follow their parent, in the order of the loops.
    OpBuilder moduleBuilder(&getContext());
    moduleBuilder.setInsertionPointAfter(parent);
    unsigned counter = 0;
    for (scf::ForallOp forall : outermost)
      if (failed(outline(forall, parent, moduleBuilder, symbols, counter)))
        return signalPassFailure();
  }
}

} // namespace
