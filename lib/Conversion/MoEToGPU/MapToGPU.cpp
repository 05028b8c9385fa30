//===- MapToGPU.cpp - the work of host functions onto the GPU -------------===//
//
// After bufferization every buffer of a CUDA entry point is device memory:
// the host may compute sizes and pointers, but every load and store must run
// on the device. Parallel loops become grids (all dimensions collapsed into
// one, tiled into blocks of `threads-per-block`); whatever else touches
// memory runs in a one-thread launch, in program order on the stream.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/Passes.h"

#include "mlir/Conversion/SCFToGPU/SCFToGPU.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlowOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/ParallelLoopMapper.h"
#include "mlir/Dialect/GPU/Utils/GPUUtils.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/DialectConversion.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEMAPTOGPU
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Ops the host runs: no memory is read or written, only sizes, views and
/// pointers computed, or the runtime called.
bool runsOnHost(Operation *op) {
  if (op->hasTrait<OpTrait::IsTerminator>())
    return true;
  if (auto call = dyn_cast<func::CallOp>(op))
    return call.getCallee().starts_with("moe_rt_");
  if (isa<memref::AllocOp, memref::DeallocOp>(op))
    return true;
  if (op->getNumRegions() != 0)
    return false;
  return isMemoryEffectFree(op);
}

bool containsParallelLoop(Operation *op) {
  return op
      ->walk([](scf::ParallelOp) { return WalkResult::interrupt(); })
      .wasInterrupted();
}

/// Whether the host can run `op`'s control flow itself and leave its body's
/// loops to launches: an scf.for or scf.if with no results, whose bounds or
/// condition the host has.
bool isHostControlFlow(Operation *op) {
  if (!isa<scf::ForOp, scf::IfOp>(op) || op->getNumResults() != 0)
    return false;
  return containsParallelLoop(op);
}

/// The pointer argument a caller's buffer was made from: the entry point
/// casts a descriptor built with llvm.insertvalue to a memref, and an
/// optional output gets such a cast of its own where it is written. Null for
/// other ops.
Value callerPointer(Operation *def) {
  auto cast = dyn_cast<UnrealizedConversionCastOp>(def);
  if (!cast || cast->getNumOperands() != 1)
    return nullptr;
  Value descriptor = cast->getOperand(0);
  while (auto insert = descriptor.getDefiningOp<LLVM::InsertValueOp>()) {
    // Position 1 of a memref descriptor is the aligned pointer.
    if (insert.getPosition() == ArrayRef<int64_t>{1})
      return insert.getValue();
    descriptor = insert.getContainer();
  }
  return nullptr;
}

/// The buffer `memref` is a view of: a function argument (distinct
/// arguments do not overlap: the C ABI's buffers are restrict), an
/// allocation or a scratch slot (moe-allocate-scratch-up-front gives every
/// allocation its own).
Value bufferRoot(Value memref) {
  while (Operation *def = memref.getDefiningOp()) {
    if (auto subview = dyn_cast<memref::SubViewOp>(def))
      memref = subview.getSource();
    else if (auto cast = dyn_cast<memref::CastOp>(def))
      memref = cast.getSource();
    else if (auto reinterpret = dyn_cast<memref::ReinterpretCastOp>(def))
      memref = reinterpret.getSource();
    else if (auto expand = dyn_cast<memref::ExpandShapeOp>(def))
      memref = expand.getSrc();
    else if (auto collapse = dyn_cast<memref::CollapseShapeOp>(def))
      memref = collapse.getSrc();
    else if (Value pointer = callerPointer(def))
      return pointer;
    else
      break;
  }
  return memref;
}

/// Whether the iterations of `loop` are independent, so that it can run as
/// a parallel loop: no loop-carried values, only loads and stores touch
/// memory, and every buffer written is accessed through one memref defined
/// outside the loop, always with the induction variable at the same index
/// (each iteration owns its row). Row loops over tokens (top-k) are.
bool hasIndependentIterations(scf::ForOp loop) {
  if (loop.getNumResults() != 0)
    return false;
  Value iv = loop.getInductionVar();
  struct Access {
    Value memref;
    std::optional<unsigned> ivPosition;
    bool write;
  };
  SmallVector<Access> accesses;
  auto ivPosition = [&](ValueRange indices) -> std::optional<unsigned> {
    for (auto [i, index] : llvm::enumerate(indices))
      if (index == iv)
        return i;
    return std::nullopt;
  };
  WalkResult walk = loop.getBody()->walk([&](Operation *op) {
    if (auto load = dyn_cast<memref::LoadOp>(op)) {
      accesses.push_back({load.getMemRef(), ivPosition(load.getIndices()),
                          false});
      return WalkResult::advance();
    }
    if (auto store = dyn_cast<memref::StoreOp>(op)) {
      accesses.push_back({store.getMemRef(), ivPosition(store.getIndices()),
                          true});
      return WalkResult::advance();
    }
    if (isa<scf::ForOp, scf::IfOp, scf::YieldOp, scf::ParallelOp,
            scf::ReduceOp>(op) ||
        isMemoryEffectFree(op))
      return WalkResult::advance();
    return WalkResult::interrupt();
  });
  if (walk.wasInterrupted())
    return false;
  for (Access &write : accesses) {
    if (!write.write)
      continue;
    Operation *owner = write.memref.getParentBlock()->getParentOp();
    if (!write.ivPosition || loop->isAncestor(owner))
      return false;
    Value root = bufferRoot(write.memref);
    for (const Access &other : accesses)
      if (bufferRoot(other.memref) == root &&
          (other.memref != write.memref ||
           other.ivPosition != write.ivPosition))
        return false;
  }
  return true;
}

/// `loop` (independent iterations) as a one-dimensional scf.parallel.
scf::ParallelOp toParallelLoop(RewriterBase &rewriter, scf::ForOp loop) {
  rewriter.setInsertionPoint(loop);
  auto parallel = scf::ParallelOp::create(
      rewriter, loop.getLoc(), ValueRange{loop.getLowerBound()},
      ValueRange{loop.getUpperBound()}, ValueRange{loop.getStep()});
  Block *body = parallel.getBody();
  rewriter.eraseOp(loop.getBody()->getTerminator());
  rewriter.inlineBlockBefore(loop.getBody(), body->getTerminator(),
                             body->getArgument(0));
  rewriter.eraseOp(loop);
  return parallel;
}

/// scf.parallel nests inside device code that is not mapped (a one-thread
/// launch) become scf.for nests.
void sequentializeParallelLoops(RewriterBase &rewriter, Operation *root) {
  SmallVector<scf::ParallelOp> loops;
  root->walk([&](scf::ParallelOp loop) { loops.push_back(loop); });
  for (scf::ParallelOp loop : loops) {
    rewriter.setInsertionPoint(loop);
    Location loc = loop.getLoc();
    SmallVector<Value> ivs;
    Block *innermost = nullptr;
    OpBuilder::InsertionGuard guard(rewriter);
    for (auto [lb, ub, step] : llvm::zip(loop.getLowerBound(),
                                         loop.getUpperBound(),
                                         loop.getStep())) {
      auto forOp = scf::ForOp::create(rewriter, loc, lb, ub, step);
      ivs.push_back(forOp.getInductionVar());
      innermost = forOp.getBody();
      rewriter.setInsertionPointToStart(innermost);
    }
    Block *body = loop.getBody();
    // scf.reduce of a loop without reductions only terminates the body.
    rewriter.eraseOp(body->getTerminator());
    rewriter.inlineBlockBefore(body, innermost->getTerminator(), ivs);
    rewriter.eraseOp(loop);
  }
}

/// How one load or store of a loop body reaches its buffer.
struct BufferAccess {
  Value memref;
  // Per induction variable of the loop, the index position naming it.
  SmallVector<std::optional<unsigned>> ivPositions;
  bool write;
};

/// The accesses of `loop`'s body by buffer root, or nullopt when its body
/// touches memory other than by memref.load/store.
std::optional<llvm::MapVector<Value, SmallVector<BufferAccess>>>
collectAccesses(scf::ParallelOp loop) {
  llvm::MapVector<Value, SmallVector<BufferAccess>> accesses;
  ValueRange ivs = loop.getInductionVars();
  auto record = [&](Value memref, ValueRange indices, bool write) {
    BufferAccess access{memref, {}, write};
    for (Value iv : ivs) {
      std::optional<unsigned> position;
      for (auto [i, index] : llvm::enumerate(indices))
        if (index == iv)
          position = i;
      access.ivPositions.push_back(position);
    }
    accesses[bufferRoot(memref)].push_back(access);
  };
  WalkResult walk = loop.getBody()->walk([&](Operation *op) {
    if (auto load = dyn_cast<memref::LoadOp>(op))
      record(load.getMemRef(), load.getIndices(), false);
    else if (auto store = dyn_cast<memref::StoreOp>(op))
      record(store.getMemRef(), store.getIndices(), true);
    // Region ops whose effects are their bodies' (scf.for, scf.if,
    // scf.index_switch) are walked into.
    else if (!op->hasTrait<OpTrait::HasRecursiveMemoryEffects>() &&
             !isa<scf::YieldOp, scf::ReduceOp>(op) && !isMemoryEffectFree(op))
      return WalkResult::interrupt();
    return WalkResult::advance();
  });
  if (walk.wasInterrupted())
    return std::nullopt;
  return accesses;
}

/// Equal constants, or the results of two alike side-effect-free ops on
/// the same operands (`memref.dim` of one buffer, asked twice).
bool sameBound(Value a, Value b) {
  if (a == b)
    return true;
  std::optional<int64_t> ca = getConstantIntValue(a),
                         cb = getConstantIntValue(b);
  if (ca || cb)
    return ca && cb && *ca == *cb;
  Operation *defA = a.getDefiningOp(), *defB = b.getDefiningOp();
  return defA && defB && defA->getNumRegions() == 0 &&
         isMemoryEffectFree(defA) &&
         cast<OpResult>(a).getResultNumber() ==
             cast<OpResult>(b).getResultNumber() &&
         OperationEquivalence::isEquivalentTo(
             defA, defB, OperationEquivalence::Flags::IgnoreLocations);
}

/// Whether `second` may run each iteration right after the same iteration
/// of `first` (adjacent, equal iteration spaces): every buffer that one of
/// them writes and both touch is accessed through one memref with every
/// induction variable at the same index position, so each iteration owns
/// its elements of it in both loops.
bool canFuse(scf::ParallelOp first, scf::ParallelOp second) {
  if (first.getNumReductions() != 0 || second.getNumReductions() != 0 ||
      first.getNumLoops() != second.getNumLoops())
    return false;
  for (auto [a, b] : llvm::zip(
           llvm::concat<Value>(first.getLowerBound(), first.getUpperBound(),
                               first.getStep()),
           llvm::concat<Value>(second.getLowerBound(), second.getUpperBound(),
                               second.getStep())))
    if (!sameBound(a, b))
      return false;
  auto firstAccesses = collectAccesses(first);
  auto secondAccesses = collectAccesses(second);
  if (!firstAccesses || !secondAccesses)
    return false;
  for (auto &[root, accesses] : *firstAccesses) {
    auto other = secondAccesses->find(root);
    if (other == secondAccesses->end())
      continue;
    SmallVector<BufferAccess> all(accesses);
    all.append(other->second);
    if (llvm::none_of(all, [](const BufferAccess &a) { return a.write; }))
      continue;
    for (const BufferAccess &access : all)
      if (access.memref != all.front().memref ||
          access.ivPositions != all.front().ivPositions ||
          llvm::is_contained(access.ivPositions, std::nullopt))
        return false;
  }
  return true;
}

/// Whether `first` and `second` touch no common buffer that one of them
/// writes: either may run before the other.
bool areIndependent(scf::ParallelOp first, scf::ParallelOp second) {
  auto firstAccesses = collectAccesses(first);
  auto secondAccesses = collectAccesses(second);
  if (!firstAccesses || !secondAccesses)
    return false;
  auto writes = [](ArrayRef<BufferAccess> accesses) {
    return llvm::any_of(accesses,
                        [](const BufferAccess &a) { return a.write; });
  };
  for (auto &[root, accesses] : *firstAccesses) {
    auto other = secondAccesses->find(root);
    if (other != secondAccesses->end() &&
        (writes(accesses) || writes(other->second)))
      return false;
  }
  return true;
}

/// Fuses parallel loops of `block` with nothing but side-effect-free ops and
/// other parallel loops between them, when canFuse allows and every loop in
/// between is independent of the earlier one (so that it may move down):
/// one kernel launch instead of several, each thread running the loops'
/// bodies for its iteration in program order (a fill, the GEMM that does
/// not read it, then the read-out that adds to it: two launches). Upstream's
/// scf-parallel-loop-fusion cannot be used: it does not check two loops
/// writing one buffer, and its alias analysis sees the scratch slots as
/// views of one buffer.
void fuseParallelLoops(RewriterBase &rewriter, Block &block) {
  // The loops since the last op with effects, in order.
  SmallVector<scf::ParallelOp> chain;
  for (Operation &op : llvm::make_early_inc_range(block)) {
    auto loop = dyn_cast<scf::ParallelOp>(op);
    if (!loop) {
      if (!isMemoryEffectFree(&op) || op.getNumRegions() != 0)
        chain.clear();
      continue;
    }
    for (size_t i = chain.size(); i-- > 0;) {
      scf::ParallelOp earlier = chain[i];
      if (!canFuse(earlier, loop))
        continue;
      if (!llvm::all_of(ArrayRef(chain).drop_front(i + 1),
                        [&](scf::ParallelOp between) {
                          return areIndependent(earlier, between);
                        }))
        continue;
      Block *body = loop.getBody();
      rewriter.eraseOp(earlier.getBody()->getTerminator());
      rewriter.inlineBlockBefore(earlier.getBody(), body, body->begin(),
                                 loop.getInductionVars());
      rewriter.eraseOp(earlier);
      chain.erase(chain.begin() + i);
      break;
    }
    chain.push_back(loop);
  }
}

class GPUMapper {
public:
  GPUMapper(MLIRContext *ctx, int64_t threadsPerBlock)
      : ctx(ctx), rewriter(ctx), threadsPerBlock(threadsPerBlock) {}

  LogicalResult mapRegion(Region &region) {
    for (Block &block : region)
      if (failed(mapBlock(block)))
        return failure();
    return success();
  }

private:
  LogicalResult mapBlock(Block &block) {
    SmallVector<Operation *> group;
    for (Operation &op : llvm::make_early_inc_range(block)) {
      bool host = runsOnHost(&op);
      // A group whose values the host would need (sizes of a loop over
      // experts read from device memory) takes in what follows, until
      // nothing outside uses them: the host cannot read device memory.
      if (!group.empty() && escapes(collectMoved(group))) {
        if (op.hasTrait<OpTrait::IsTerminator>() ||
            (host && !isMemoryEffectFree(&op)))
          return launchSequential(group);
        if (!host)
          group.push_back(&op);
        continue;
      }
      if (host) {
        // Calls, allocations and branches keep their place among launches.
        if (!isMemoryEffectFree(&op) || op.hasTrait<OpTrait::IsTerminator>()) {
          if (failed(launchSequential(group)))
            return failure();
          group.clear();
        }
        continue;
      }
      auto loop = dyn_cast<scf::ParallelOp>(op);
      if (auto forOp = dyn_cast<scf::ForOp>(op);
          forOp && hasIndependentIterations(forOp))
        loop = toParallelLoop(rewriter, forOp);
      if ((loop && loop.getNumReductions() == 0) || isHostControlFlow(&op)) {
        if (failed(launchSequential(group)))
          return failure();
        group.clear();
        if (loop) {
          mapParallelLoop(loop);
          continue;
        }
        for (Region &nested : op.getRegions())
          if (failed(mapRegion(nested)))
            return failure();
        continue;
      }
      group.push_back(&op);
    }
    return launchSequential(group);
  }

  /// `group` (ops of one block, in order) and the side-effect-free ops
  /// between them that use their results, in program order.
  SmallVector<Operation *> collectMoved(ArrayRef<Operation *> group) {
    Operation *first = group.front(), *last = group.back();
    llvm::SetVector<Operation *> moved(group.begin(), group.end());
    SmallVector<Operation *> ordered;
    for (Operation *op = first;; op = op->getNextNode()) {
      bool usesMoved = llvm::any_of(op->getOperands(), [&](Value v) {
        Operation *def = v.getDefiningOp();
        return def && moved.contains(def);
      });
      if (usesMoved)
        moved.insert(op);
      if (moved.contains(op))
        ordered.push_back(op);
      if (op == last)
        break;
    }
    return ordered;
  }

  /// The first op of `ordered` whose value is used outside of them.
  Operation *escapes(ArrayRef<Operation *> ordered) {
    auto inGroup = [&](Operation *user) {
      return llvm::any_of(ordered,
                          [&](Operation *op) { return op->isAncestor(user); });
    };
    for (Operation *op : ordered)
      for (Operation *user : op->getUsers())
        if (!inGroup(user))
          return op;
    return nullptr;
  }

  /// All dimensions collapsed into one, tiled into blocks of threads; loops
  /// nested inside run sequentially in each thread.
  void mapParallelLoop(scf::ParallelOp loop) {
    // As scf.for nests: upstream's lowering maps only parallel loops nested
    // directly in a mapped body, not inside the bounds check of the tiling
    // (a token tile's loops over its row).
    SmallVector<Operation *> body;
    for (Operation &op : loop.getBody()->without_terminator())
      body.push_back(&op);
    for (Operation *op : body)
      sequentializeParallelLoops(rewriter, op);
    if (loop.getNumLoops() > 1) {
      std::vector<unsigned> all(loop.getNumLoops());
      for (unsigned i = 0; i < all.size(); ++i)
        all[i] = i;
      Operation *before = loop->getPrevNode();
      Block *block = loop->getBlock();
      rewriter.setInsertionPoint(loop);
      collapseParallelLoops(rewriter, loop, {all});
      // The collapsed loop is the first scf.parallel after `before`.
      Operation *next = before ? before->getNextNode() : &block->front();
      while (!isa<scf::ParallelOp>(next))
        next = next->getNextNode();
      loop = cast<scf::ParallelOp>(next);
    }
    auto [blocks, threads] =
        scf::tileParallelLoop(loop, {threadsPerBlock}, /*noMinMaxBounds=*/true);
    AffineMap identity = AffineMap::getMultiDimIdentityMap(1, ctx);
    auto mapping = [&](gpu::Processor processor) {
      return gpu::ParallelLoopDimMappingAttr::get(ctx, processor, identity,
                                                  identity);
    };
    (void)gpu::setMappingAttr(blocks, {mapping(gpu::Processor::BlockX)});
    (void)gpu::setMappingAttr(threads, {mapping(gpu::Processor::ThreadX)});
    threads.getBody()->walk([&](scf::ParallelOp nested) {
      SmallVector<gpu::ParallelLoopDimMappingAttr> sequential(
          nested.getNumLoops(), mapping(gpu::Processor::Sequential));
      (void)gpu::setMappingAttr(nested, sequential);
    });
  }

  /// Moves `group` (ops of one block, in order) into a one-thread launch
  /// placed at its last op, with the host ops between them that use their
  /// results.
  LogicalResult launchSequential(ArrayRef<Operation *> group) {
    if (group.empty())
      return success();
    SmallVector<Operation *> ordered = collectMoved(group);
    if (Operation *op = escapes(ordered))
      return op->emitOpError(
          "computes a value on the device that the host uses; the CUDA "
          "target cannot lower this layer");

    Operation *last = group.back();
    Location loc = last->getLoc();
    rewriter.setInsertionPointAfter(last);
    Value one = arith::ConstantIndexOp::create(rewriter, loc, 1);
    auto launch = gpu::LaunchOp::create(rewriter, loc, one, one, one, one, one,
                                        one);
    Block &body = launch.getBody().front();
    rewriter.setInsertionPointToEnd(&body);
    auto terminator = gpu::TerminatorOp::create(rewriter, loc);
    for (Operation *op : ordered)
      op->moveBefore(terminator);
    sequentializeParallelLoops(rewriter, launch);
    return success();
  }

  MLIRContext *ctx;
  IRRewriter rewriter;
  int64_t threadsPerBlock;
};

/// memref.copy as a parallel loop nest, which then maps like any other.
void expandCopies(func::FuncOp fn) {
  SmallVector<memref::CopyOp> copies;
  fn.walk([&](memref::CopyOp copy) { copies.push_back(copy); });
  for (memref::CopyOp copy : copies) {
    OpBuilder b(copy);
    Location loc = copy.getLoc();
    auto type = cast<MemRefType>(copy.getSource().getType());
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    if (type.getRank() == 0) {
      Value v = memref::LoadOp::create(b, loc, copy.getSource());
      memref::StoreOp::create(b, loc, v, copy.getTarget());
      copy.erase();
      continue;
    }
    SmallVector<Value> lbs(type.getRank(), zero), steps(type.getRank(), one),
        ubs;
    for (int64_t d = 0; d < type.getRank(); ++d)
      ubs.push_back(memref::DimOp::create(b, loc, copy.getSource(), d));
    Value source = copy.getSource(), target = copy.getTarget();
    scf::ParallelOp::create(
        b, loc, lbs, ubs, steps,
        [&](OpBuilder &nb, Location nloc, ValueRange ivs) {
          Value v = memref::LoadOp::create(nb, nloc, source, ivs);
          memref::StoreOp::create(nb, nloc, v, target, ivs);
        });
    copy.erase();
  }
}

struct MoEMapToGPUPass : moe::impl::MoEMapToGPUBase<MoEMapToGPUPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (threadsPerBlock < 1 || threadsPerBlock > 1024) {
      module.emitError() << "threads-per-block must be in [1, 1024], got "
                         << static_cast<int64_t>(threadsPerBlock);
      return signalPassFailure();
    }
    GPUMapper mapper(&getContext(), threadsPerBlock);
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.isExternal())
        continue;
      expandCopies(fn);
      IRRewriter rewriter(&getContext());
      SmallVector<Block *> blocks;
      fn.walk([&](Block *block) {
        if (!isa<scf::ParallelOp>(block->getParentOp()) &&
            !block->getParentOp()->getParentOfType<scf::ParallelOp>())
          blocks.push_back(block);
      });
      for (Block *block : blocks)
        fuseParallelLoops(rewriter, *block);
      if (failed(mapper.mapRegion(fn.getBody())))
        return signalPassFailure();
    }

    ConversionTarget target(getContext());
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    configureParallelLoopToGPULegality(target);
    RewritePatternSet patterns(&getContext());
    populateParallelLoopToGPUPatterns(patterns);
    if (failed(applyPartialConversion(module, target, std::move(patterns))))
      return signalPassFailure();
    finalizeParallelLoopToGPUConversion(module);
    // A loop left outside the kernels would run on the host, on device
    // memory.
    WalkResult leftOnHost = module.walk([](scf::ParallelOp loop) {
      if (loop->getParentOfType<gpu::LaunchOp>())
        return WalkResult::advance();
      loop.emitOpError("was not mapped to a GPU launch");
      return WalkResult::interrupt();
    });
    if (leftOnHost.wasInterrupted())
      return signalPassFailure();
    // Constants are cloned into kernels rather than passed to them.
    module.walk([](gpu::LaunchOp launch) {
      (void)sinkOperationsIntoLaunchOp(launch, [](Operation *op) {
        return isa<arith::ConstantOp>(op);
      });
    });
  }
};

} // namespace
