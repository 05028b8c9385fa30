//===- AllocateScratchUpFront.cpp - one checked scratch buffer per call ---===//
//
// A kernel cannot unwind from inside its loop nests, so a heap allocation
// that fails half-way through a layer could only abort the process. Every
// scratch size of an entry point is a function of its arguments (or bounded
// by one), so the entry point can take all of its scratch memory in one
// allocation before any work starts, check it, and return a status instead.
//
//===----------------------------------------------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/Transforms/Transforms.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlowOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Dominance.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/CallInterfaces.h"
#include "mlir/Interfaces/DataLayoutInterfaces.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/ValueBoundsOpInterface.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

namespace mlir::moe {
#define GEN_PASS_DEF_ALLOCATESCRATCHUPFRONT
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

// Slots start at multiples of this: the runtime's alignment of every buffer.
constexpr int64_t kSlotAlignment = 64;
// moe_status in moe_runtime.h.
constexpr int32_t kOutOfMemory = 3;

/// Whether `op` may write or free memory (itself or through its regions):
/// the scratch allocation must come before any such op, so that a failure
/// leaves the caller's buffers as they were.
bool mayWrite(Operation *op) {
  if (auto effects = dyn_cast<MemoryEffectOpInterface>(op)) {
    if (effects.hasEffect<MemoryEffects::Write>() ||
        effects.hasEffect<MemoryEffects::Free>())
      return true;
  } else if (!op->hasTrait<OpTrait::HasRecursiveMemoryEffects>()) {
    return true; // unknown effects: a call, for one
  }
  if (op->hasTrait<OpTrait::HasRecursiveMemoryEffects>())
    for (Region &region : op->getRegions())
      for (Operation &nested : region.getOps())
        if (mayWrite(&nested))
          return true;
  return false;
}

/// Whether the buffer `root` stays inside `region`: every use of it, or of a
/// view, cast or tensor of it, lies in the region and hands nothing on
/// (no yield, return or call). A buffer of a loop body that stays in the body
/// is dead when the iteration ends, so one slot serves every iteration.
bool staysIn(Value root, Region &region) {
  SmallVector<Value> worklist = {root};
  DenseSet<Value> seen;
  while (!worklist.empty()) {
    Value value = worklist.pop_back_val();
    if (!seen.insert(value).second)
      continue;
    for (Operation *user : value.getUsers()) {
      if (!region.isAncestor(user->getParentRegion()) ||
          user->hasTrait<OpTrait::IsTerminator>() || isa<CallOpInterface>(user))
        return false;
      // Views and tensors of the buffer may alias it; a vector loaded from
      // it is a copy of its data (it may be yielded from a loop freely).
      for (Value result : user->getResults())
        if (isa<BaseMemRefType, TensorType>(result.getType()))
          worklist.push_back(result);
    }
  }
  return true;
}

/// One heap allocation moved into the scratch buffer: a slot of `slotBytes`
/// (a multiple of kSlotAlignment) for each iteration of the `scf.forall`
/// loops around it, which may run at once.
struct Slot {
  memref::AllocOp alloc;
  SmallVector<scf::ForallOp> parallelLoops;   // outermost first
  Value slotBytes;                            // at the insertion point
  SmallVector<SmallVector<Value>> tripCounts; // per loop, per dim
  Value offset;                               // of slot 0, in bytes
};

/// Plans and rewrites the allocations of one function.
class ScratchPlanner {
public:
  ScratchPlanner(func::FuncOp fn, Operation *point)
      : fn(fn), point(point), dominance(fn), builder(point),
        layout(DataLayout::closest(fn)) {}

  /// A slot for `alloc`, its sizes computed before `point`; failure when a
  /// size depends on what the kernels compute.
  FailureOr<Slot> plan(memref::AllocOp alloc);

  /// The total size of `slots`, laid out one after the other (sets their
  /// offsets), before `point`.
  Value layOut(MutableArrayRef<Slot> slots);

  /// Replaces the allocation of `slot` with a view of `scratch`.
  void rewrite(const Slot &slot, Value scratch);

private:
  /// Closed bounds of an index value, computed before `point`; null where
  /// unknown.
  struct Range {
    Value lower, upper;
  };

  /// `value` computed before `point`: itself where it dominates the point, a
  /// clone of the side-effect-free ops it is computed by otherwise; null when
  /// it depends on what the kernels compute.
  Value exactAtPoint(Value value);
  /// Bounds of `value` over every execution of its definition. Sizes inside
  /// loops vary with the induction variables (a token tile's rows:
  /// min(tile, tokens - t0)) or with the data (an expert's rows: offsets
  /// clamped into [0, rows]): their bound fits every iteration.
  Range range(Value value);
  Range computeRange(Value value);
  /// Dim `index` of the memref `source` computed before `point`, through
  /// the reshapes and allocations it is a view of (an MH-MoE's sub-tokens:
  /// a collapse of an expand of a buffer the kernels fill); null if unknown.
  Value exactDim(Value source, int64_t index);
  Range inductionVarRange(BlockArgument arg);
  /// Whether `value` is never negative: by the ValueBoundsOpInterfaces (a
  /// dim, a product of dims) or by a constant lower bound of its range.
  bool nonNegative(Value value);

  Value constant(int64_t v) {
    Value &c = constants[v];
    if (!c)
      c = arith::ConstantIndexOp::create(builder, fn.getLoc(), v);
    return c;
  }

  func::FuncOp fn;
  Operation *point;
  DominanceInfo dominance;
  OpBuilder builder;
  DataLayout layout;
  DenseMap<Value, Value> exact;
  DenseMap<Value, Range> ranges;
  DenseMap<int64_t, Value> constants;
};

Value ScratchPlanner::exactAtPoint(Value value) {
  if (dominance.properlyDominates(value, point))
    return value;
  if (Value known = exact.lookup(value))
    return known;
  Operation *def = value.getDefiningOp();
  if (!def)
    return Value();
  // A dim of a buffer made during the work is still a function of the
  // arguments when the buffer's shape is.
  if (auto dim = dyn_cast<memref::DimOp>(def)) {
    std::optional<int64_t> index = dim.getConstantIndex();
    Value result = index ? exactDim(dim.getSource(), *index) : Value();
    if (result)
      exact[value] = result;
    return result;
  }
  if (def->getNumRegions() != 0 || !isPure(def))
    return Value();
  IRMapping mapping;
  for (Value operand : def->getOperands()) {
    Value atPoint = exactAtPoint(operand);
    if (!atPoint)
      return Value();
    mapping.map(operand, atPoint);
  }
  Operation *clone = builder.clone(*def, mapping);
  for (auto [old, copy] : llvm::zip(def->getResults(), clone->getResults()))
    exact[old] = copy;
  return exact.lookup(value);
}

Value ScratchPlanner::exactDim(Value source, int64_t index) {
  auto type = dyn_cast<MemRefType>(source.getType());
  if (!type || index < 0 || index >= type.getRank())
    return Value();
  if (!type.isDynamicDim(index))
    return constant(type.getDimSize(index));
  if (dominance.properlyDominates(source, point))
    return memref::DimOp::create(builder, fn.getLoc(), source, index);
  Operation *def = source.getDefiningOp();
  if (auto alloc = dyn_cast_or_null<memref::AllocOp>(def))
    return exactAtPoint(
        alloc.getDynamicSizes()[type.getDynamicDimIndex(index)]);
  if (auto expand = dyn_cast_or_null<memref::ExpandShapeOp>(def)) {
    OpFoldResult size = expand.getMixedOutputShape()[index];
    return isa<Value>(size) ? exactAtPoint(cast<Value>(size))
                            : constant(*getConstantIntValue(size));
  }
  if (auto collapse = dyn_cast_or_null<memref::CollapseShapeOp>(def)) {
    // Held: the indices come by value, and a range-for over an element of a
    // temporary outlives it.
    SmallVector<ReassociationIndices> groups =
        collapse.getReassociationIndices();
    Value product = constant(1);
    for (int64_t dim : groups[index]) {
      Value part = exactDim(collapse.getSrc(), dim);
      if (!part)
        return Value();
      product = builder.createOrFold<arith::MulIOp>(fn.getLoc(), product, part);
    }
    return product;
  }
  return Value();
}

ScratchPlanner::Range ScratchPlanner::range(Value value) {
  auto it = ranges.find(value);
  if (it != ranges.end())
    return it->second;
  Range result = computeRange(value);
  ranges[value] = result;
  return result;
}

bool ScratchPlanner::nonNegative(Value value) {
  FailureOr<int64_t> lower = ValueBoundsConstraintSet::computeConstantBound(
      presburger::BoundType::LB, ValueBoundsConstraintSet::Variable(value));
  if (succeeded(lower))
    return *lower >= 0;
  Value bound = range(value).lower;
  std::optional<int64_t> known =
      bound ? getConstantIntValue(bound) : std::nullopt;
  return known && *known >= 0;
}

ScratchPlanner::Range ScratchPlanner::inductionVarRange(BlockArgument arg) {
  Operation *owner = arg.getOwner()->getParentOp();
  OpFoldResult lb, ub, step;
  if (auto loop = dyn_cast<scf::ForOp>(owner)) {
    if (arg != loop.getInductionVar())
      return {};
    lb = loop.getLowerBound();
    ub = loop.getUpperBound();
    step = loop.getStep();
  } else if (auto loop = dyn_cast<scf::ForallOp>(owner)) {
    unsigned dim = arg.getArgNumber();
    if (dim >= loop.getRank())
      return {};
    lb = loop.getMixedLowerBound()[dim];
    ub = loop.getMixedUpperBound()[dim];
    step = loop.getMixedStep()[dim];
  } else {
    return {};
  }
  std::optional<int64_t> stride = getConstantIntValue(step);
  if (!stride || *stride <= 0)
    return {};
  auto valueOf = [&](OpFoldResult ofr) {
    return getValueOrCreateConstantIndexOp(builder, fn.getLoc(), ofr);
  };
  Range lower = range(valueOf(lb)), upper = range(valueOf(ub));
  // The body runs only for lb <= iv < ub.
  Value last;
  if (upper.upper)
    last = builder.createOrFold<arith::SubIOp>(fn.getLoc(), upper.upper,
                                               constant(1));
  return {lower.lower, last};
}

ScratchPlanner::Range ScratchPlanner::computeRange(Value value) {
  if (Value known = exactAtPoint(value))
    return {known, known};
  if (!value.getType().isIndex())
    return {};
  if (auto arg = dyn_cast<BlockArgument>(value))
    return inductionVarRange(arg);

  Location loc = fn.getLoc();
  auto both = [](Value a, Value b) { return a && b; };
  auto min = [&](Value a, Value b) -> Value {
    return both(a, b) ? builder.createOrFold<arith::MinSIOp>(loc, a, b)
                      : Value();
  };
  auto max = [&](Value a, Value b) -> Value {
    return both(a, b) ? builder.createOrFold<arith::MaxSIOp>(loc, a, b)
                      : Value();
  };
  auto add = [&](Value a, Value b) -> Value {
    return both(a, b) ? builder.createOrFold<arith::AddIOp>(loc, a, b)
                      : Value();
  };
  auto sub = [&](Value a, Value b) -> Value {
    return both(a, b) ? builder.createOrFold<arith::SubIOp>(loc, a, b)
                      : Value();
  };
  auto either = [](Value a, Value b) { return a ? a : b; };

  Operation *def = value.getDefiningOp();
  if (isa<arith::AddIOp>(def)) {
    Range a = range(def->getOperand(0)), b = range(def->getOperand(1));
    return {add(a.lower, b.lower), add(a.upper, b.upper)};
  }
  if (isa<arith::SubIOp>(def)) {
    Range a = range(def->getOperand(0)), b = range(def->getOperand(1));
    return {sub(a.lower, b.upper), sub(a.upper, b.lower)};
  }
  // The unsigned ops order as the signed ones on values known not negative.
  bool unsignedOp =
      isa<arith::MinUIOp, arith::MaxUIOp, arith::DivUIOp, arith::CeilDivUIOp>(
          def);
  if (unsignedOp && !llvm::all_of(def->getOperands(), [&](Value operand) {
        return nonNegative(operand);
      }))
    return {};
  if (isa<arith::MinSIOp, arith::MinUIOp>(def)) {
    Range a = range(def->getOperand(0)), b = range(def->getOperand(1));
    Value upper = both(a.upper, b.upper) ? min(a.upper, b.upper)
                                         : either(a.upper, b.upper);
    return {min(a.lower, b.lower), upper};
  }
  if (isa<arith::MaxSIOp, arith::MaxUIOp>(def)) {
    Range a = range(def->getOperand(0)), b = range(def->getOperand(1));
    Value lower = both(a.lower, b.lower) ? max(a.lower, b.lower)
                                         : either(a.lower, b.lower);
    return {lower, max(a.upper, b.upper)};
  }
  if (auto select = dyn_cast<arith::SelectOp>(def)) {
    Range a = range(select.getTrueValue()), b = range(select.getFalseValue());
    return {min(a.lower, b.lower), max(a.upper, b.upper)};
  }
  // Products and quotients by a positive constant keep the order; a
  // quotient rounded toward zero lies between the floor and the ceiling.
  if (isa<arith::MulIOp, arith::CeilDivUIOp, arith::CeilDivSIOp, arith::DivUIOp,
          arith::DivSIOp, arith::FloorDivSIOp>(def)) {
    std::optional<int64_t> factor = getConstantIntValue(def->getOperand(1));
    Value other = def->getOperand(0);
    if (!factor && isa<arith::MulIOp>(def)) {
      factor = getConstantIntValue(def->getOperand(0));
      other = def->getOperand(1);
    }
    if (!factor || *factor <= 0)
      return {};
    Range x = range(other);
    auto apply = [&](Value v, bool upper) -> Value {
      if (!v)
        return Value();
      Value c = constant(*factor);
      if (isa<arith::MulIOp>(def))
        return builder.createOrFold<arith::MulIOp>(loc, v, c);
      if (isa<arith::CeilDivUIOp, arith::CeilDivSIOp>(def) ||
          (upper && isa<arith::DivSIOp>(def)))
        return builder.createOrFold<arith::CeilDivSIOp>(loc, v, c);
      return builder.createOrFold<arith::FloorDivSIOp>(loc, v, c);
    };
    return {apply(x.lower, /*upper=*/false), apply(x.upper, /*upper=*/true)};
  }
  // Everything else (affine.min of a tile, memref.dim of a view): what the
  // ValueBoundsOpInterfaces know, in terms of values known before the work.
  auto stop = [&](Value v, std::optional<int64_t>, ValueBoundsConstraintSet &) {
    return dominance.properlyDominates(v, point);
  };
  auto reify = [&](presburger::BoundType type) -> Value {
    FailureOr<OpFoldResult> bound = arith::reifyIndexValueBound(
        builder, loc, type, value, stop, /*closedUB=*/true);
    if (failed(bound))
      return Value();
    return getValueOrCreateConstantIndexOp(builder, loc, *bound);
  };
  return {reify(presburger::BoundType::LB), reify(presburger::BoundType::UB)};
}

FailureOr<Slot> ScratchPlanner::plan(memref::AllocOp alloc) {
  MemRefType type = alloc.getType();
  if (!type.getLayout().isIdentity() || type.getMemorySpace() ||
      !alloc.getSymbolOperands().empty() ||
      alloc.getAlignment().value_or(1) > kSlotAlignment)
    return failure();

  // The loops around the allocation: a parallel one needs a slot per
  // iteration, a sequential one can reuse one slot if the buffer dies with
  // the iteration.
  Slot slot;
  slot.alloc = alloc;
  for (Operation *parent = alloc->getParentOp(); parent != fn;
       parent = parent->getParentOp()) {
    if (auto forall = dyn_cast<scf::ForallOp>(parent)) {
      if (!staysIn(alloc, forall.getRegion()))
        return failure();
      slot.parallelLoops.insert(slot.parallelLoops.begin(), forall);
    } else if (isa<scf::ForOp, scf::WhileOp>(parent)) {
      if (!staysIn(alloc, parent->getRegion(parent->getNumRegions() - 1)))
        return failure();
    } else if (!isa<scf::IfOp, scf::ExecuteRegionOp, scf::IndexSwitchOp,
                    memref::AllocaScopeOp>(parent)) {
      return failure(); // a region of unknown semantics
    }
  }

  Location loc = alloc.getLoc();
  int64_t elementBytes = layout.getTypeSize(type.getElementType());
  int64_t staticBytes = elementBytes;
  for (int64_t d : type.getShape())
    if (!ShapedType::isDynamic(d))
      staticBytes *= d;
  Value bytes = constant(staticBytes);
  for (Value size : alloc.getDynamicSizes()) {
    Value atPoint = range(size).upper;
    if (!atPoint)
      return failure();
    bytes = builder.createOrFold<arith::MulIOp>(loc, bytes, atPoint);
  }
  // Round up, so that every slot starts on a cache line.
  Value mask = constant(kSlotAlignment - 1);
  bytes = builder.createOrFold<arith::AndIOp>(
      loc, builder.createOrFold<arith::AddIOp>(loc, bytes, mask),
      constant(~(kSlotAlignment - 1)));
  slot.slotBytes = bytes;

  for (scf::ForallOp forall : slot.parallelLoops) {
    SmallVector<Value> counts;
    for (auto [lb, ub, step] :
         llvm::zip_equal(forall.getMixedLowerBound(),
                         forall.getMixedUpperBound(), forall.getMixedStep())) {
      std::optional<int64_t> lower = getConstantIntValue(lb);
      std::optional<int64_t> stride = getConstantIntValue(step);
      if (!lower || !stride || *stride <= 0)
        return failure();
      Value upper = isa<Value>(ub) ? range(cast<Value>(ub)).upper
                                   : constant(*getConstantIntValue(ub));
      if (!upper)
        return failure();
      // ceil((ub - lb) / step), and no negative count.
      Value span = builder.createOrFold<arith::MaxSIOp>(
          loc,
          builder.createOrFold<arith::SubIOp>(loc, upper, constant(*lower)),
          constant(0));
      counts.push_back(builder.createOrFold<arith::CeilDivUIOp>(
          loc, span, constant(*stride)));
    }
    slot.tripCounts.push_back(std::move(counts));
  }
  return slot;
}

Value ScratchPlanner::layOut(MutableArrayRef<Slot> slots) {
  Location loc = fn.getLoc();
  Value total = constant(0);
  for (Slot &slot : slots) {
    slot.offset = total;
    Value bytes = slot.slotBytes;
    for (ArrayRef<Value> counts : slot.tripCounts)
      for (Value count : counts)
        bytes = builder.createOrFold<arith::MulIOp>(loc, bytes, count);
    total = builder.createOrFold<arith::AddIOp>(loc, total, bytes);
  }
  return total;
}

void ScratchPlanner::rewrite(const Slot &slot, Value scratch) {
  memref::AllocOp alloc = slot.alloc;
  OpBuilder b(alloc);
  Location loc = alloc.getLoc();
  // Slot index: the iteration of the loops around it, row-major.
  Value offset = slot.offset;
  if (!slot.parallelLoops.empty()) {
    Value index;
    for (auto [loop, counts] :
         llvm::zip_equal(slot.parallelLoops, slot.tripCounts)) {
      scf::ForallOp forall = loop;
      for (auto [iv, lb, step, count] : llvm::zip_equal(
               forall.getInductionVars(), forall.getMixedLowerBound(),
               forall.getMixedStep(), counts)) {
        Value i = iv;
        int64_t lower = *getConstantIntValue(lb);
        int64_t stride = *getConstantIntValue(step);
        if (lower != 0)
          i = arith::SubIOp::create(
              b, loc, i, arith::ConstantIndexOp::create(b, loc, lower));
        if (stride != 1)
          i = arith::DivUIOp::create(
              b, loc, i, arith::ConstantIndexOp::create(b, loc, stride));
        index =
            index ? arith::AddIOp::create(
                        b, loc, arith::MulIOp::create(b, loc, index, count), i)
                        .getResult()
                  : i;
      }
    }
    offset = arith::AddIOp::create(
        b, loc, offset, arith::MulIOp::create(b, loc, index, slot.slotBytes));
  }
  auto view = memref::ViewOp::create(b, loc, alloc.getType(), scratch, offset,
                                     alloc.getDynamicSizes());
  alloc.replaceAllUsesWith(view.getResult());
  alloc.erase();
}

/// The first op of `block` that may write memory or holds one of `allocs`:
/// the point before which all scratch memory is allocated.
Operation *findAllocationPoint(Block *block, ArrayRef<memref::AllocOp> allocs) {
  for (Operation &op : *block) {
    if (mayWrite(&op) || llvm::any_of(allocs, [&](memref::AllocOp alloc) {
          return op.isAncestor(alloc);
        }))
      return &op;
  }
  return block->getTerminator();
}

struct AllocateScratchUpFrontPass
    : moe::impl::AllocateScratchUpFrontBase<AllocateScratchUpFrontPass> {
  using Base::Base;

  void runOnOperation() override {
    if (target != "cpu" && target != "cuda") {
      getOperation().emitError()
          << "target must be cpu or cuda, got '" << target << "'";
      return signalPassFailure();
    }
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    SmallVector<func::FuncOp> entries;
    for (auto fn : module.getOps<func::FuncOp>())
      if (fn->hasAttr(kReturnsStatusAttr))
        entries.push_back(fn);
    for (func::FuncOp fn : entries) {
      fn->removeAttr(kReturnsStatusAttr);
      if (failed(allocateUpFront(fn, symbols)))
        return signalPassFailure();
    }
  }

  LogicalResult allocateUpFront(func::FuncOp fn, SymbolTable &symbols);
  func::FuncOp declareRuntime(SymbolTable &symbols, StringRef name,
                              FunctionType type);
  Value nameConstant(OpBuilder &b, SymbolTable &symbols, func::FuncOp fn);
};

func::FuncOp AllocateScratchUpFrontPass::declareRuntime(SymbolTable &symbols,
                                                        StringRef name,
                                                        FunctionType type) {
  if (auto fn = symbols.lookup<func::FuncOp>(name))
    return fn;
  ModuleOp module = getOperation();
  OpBuilder b = OpBuilder::atBlockBegin(module.getBody());
  auto fn = func::FuncOp::create(b, module.getLoc(), name, type);
  fn.setPrivate();
  symbols.insert(fn);
  return fn;
}

Value AllocateScratchUpFrontPass::nameConstant(OpBuilder &b,
                                               SymbolTable &symbols,
                                               func::FuncOp fn) {
  ModuleOp module = getOperation();
  OpBuilder mb = OpBuilder::atBlockBegin(module.getBody());
  std::string data = (fn.getSymName() + Twine('\0')).str();
  auto type =
      LLVM::LLVMArrayType::get(IntegerType::get(&getContext(), 8), data.size());
  auto global = LLVM::GlobalOp::create(
      mb, fn.getLoc(), type, /*isConstant=*/true, LLVM::Linkage::Internal,
      (fn.getSymName() + "_scratch_name").str(), mb.getStringAttr(data));
  symbols.insert(global); // renames on collision
  return LLVM::AddressOfOp::create(b, fn.getLoc(), global);
}

LogicalResult
AllocateScratchUpFrontPass::allocateUpFront(func::FuncOp fn,
                                            SymbolTable &symbols) {
  if (fn.isExternal())
    return success();
  MLIRContext *ctx = &getContext();
  auto i32 = IntegerType::get(ctx, 32);
  auto i64 = IntegerType::get(ctx, 64);
  auto ptr = LLVM::LLVMPointerType::get(ctx);
  if (fn.getFunctionType().getResults() != ArrayRef<Type>{i32})
    return fn.emitOpError("expects a single i32 status result (")
           << kReturnsStatusAttr << "), found " << fn.getFunctionType();

  SmallVector<memref::AllocOp> allocs;
  fn.walk([&](memref::AllocOp alloc) { allocs.push_back(alloc); });
  if (allocs.empty())
    return success();

  // The block that runs every allocation: after the argument checks, before
  // the work.
  Region &body = fn.getBody();
  DominanceInfo dominance(fn);
  Block *block = nullptr;
  for (memref::AllocOp alloc : allocs) {
    Block *ancestor = body.findAncestorOpInRegion(*alloc)->getBlock();
    block = block ? dominance.findNearestCommonDominator(block, ancestor)
                  : ancestor;
  }
  Operation *point = findAllocationPoint(block, allocs);

  ScratchPlanner planner(fn, point);
  SmallVector<Slot> slots;
  for (memref::AllocOp alloc : allocs) {
    FailureOr<Slot> slot = planner.plan(alloc);
    // Left to the runtime's allocation hook (which aborts on failure).
    if (failed(slot) && target == "cuda")
      return alloc.emitError("scratch size unknown before the work starts: "
                             "the CUDA target cannot allocate it");
    if (failed(slot)) {
      alloc.emitRemark("scratch size unknown before the work starts: "
                       "allocated where it is used");
      continue;
    }
    slots.push_back(*slot);
  }
  if (slots.empty())
    return success();

  Location loc = fn.getLoc();
  OpBuilder b(point);
  Value total = planner.layOut(slots);
  bool cuda = target == "cuda";
  func::FuncOp allocFn =
      declareRuntime(symbols, cuda ? "moe_rt_cuda_alloc_scratch"
                                   : "moe_rt_alloc_scratch",
                     FunctionType::get(ctx, {i64, ptr}, {ptr}));
  func::FuncOp freeFn = declareRuntime(symbols,
                                       cuda ? "moe_rt_cuda_free_scratch"
                                            : "moe_rt_free_scratch",
                                       FunctionType::get(ctx, {ptr}, {}));
  Value bytes = arith::IndexCastOp::create(b, loc, i64, total);
  Value name = nameConstant(b, symbols, fn);
  Value scratch = func::CallOp::create(b, loc, allocFn, ValueRange{bytes, name})
                      .getResult(0);
  Value null = LLVM::ZeroOp::create(b, loc, ptr);
  Value failedAlloc =
      LLVM::ICmpOp::create(b, loc, LLVM::ICmpPredicate::eq, scratch, null);

  // The runtime has recorded the failure and its message: return its code,
  // nothing written.
  Block *work = block->splitBlock(point);
  Block *outOfMemory = b.createBlock(work);
  Value code = arith::ConstantIntOp::create(b, loc, i32, kOutOfMemory);
  func::ReturnOp::create(b, loc, code);
  b.setInsertionPointToEnd(block);
  cf::CondBranchOp::create(b, loc, failedAlloc, outOfMemory, work);

  // The scratch buffer as memref<?xi8>, which memref.view cuts into slots.
  b.setInsertionPointToStart(work);
  auto arrayType = LLVM::LLVMArrayType::get(i64, 1);
  auto descType = LLVM::LLVMStructType::getLiteral(
      ctx, {ptr, ptr, i64, arrayType, arrayType});
  auto c64 = [&](int64_t v) {
    return LLVM::ConstantOp::create(b, loc, i64, v).getResult();
  };
  Value desc = LLVM::PoisonOp::create(b, loc, descType);
  desc =
      LLVM::InsertValueOp::create(b, loc, desc, scratch, ArrayRef<int64_t>{0});
  desc =
      LLVM::InsertValueOp::create(b, loc, desc, scratch, ArrayRef<int64_t>{1});
  desc =
      LLVM::InsertValueOp::create(b, loc, desc, c64(0), ArrayRef<int64_t>{2});
  desc =
      LLVM::InsertValueOp::create(b, loc, desc, bytes, ArrayRef<int64_t>{3, 0});
  desc = LLVM::InsertValueOp::create(b, loc, desc, c64(1),
                                     ArrayRef<int64_t>{4, 0});
  auto bufferType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type());
  Value buffer =
      UnrealizedConversionCastOp::create(b, loc, bufferType, desc).getResult(0);

  for (const Slot &slot : slots)
    planner.rewrite(slot, buffer);

  // Freed on every way out of the work.
  DominanceInfo after(fn);
  fn.walk([&](func::ReturnOp ret) {
    if (after.dominates(work, ret->getBlock())) {
      OpBuilder rb(ret);
      func::CallOp::create(rb, loc, freeFn, ValueRange{scratch});
    }
  });
  return success();
}

} // namespace
