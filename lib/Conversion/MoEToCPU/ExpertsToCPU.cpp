//===- ExpertsToCPU.cpp - fast CPU lowering of expert MLPs and projections ===//
//
// The expert path runs in two parallel phases over work items built from the
// dispatch plan's offsets, each item a block of one expert's rows:
//   1. (item, hidden block): h = act(w1 · x) ⊙ (w3 · x) for the item's rows,
//      reading every row straight from x through the slot's token id (the
//      gather happens on load);
//   2. (item, model block): y = init + w2 · h.
// A row's h and y are the same dot products whether its expert has one row
// or thousands, so decode and prefill share one accumulation order. The
// tiles are outer products on weight panels (PanelKernels.h; a phase whose
// weights arrive pre-packed through linalg.unpack reads them packed) or,
// with expert-kernel=row-dot, row-dot tiles (RowDotKernels.h).
//
//===----------------------------------------------------------------------===//

#include "../MoEToLinalg/LoweringUtils.h"
#include "FastPatterns.h"
#include "PanelKernels.h"
#include "RowDotKernels.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Utils/IndexingUtils.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::cpu;

namespace {
/// A grouped MLP `w2_e · act(w1_e · x_row) [⊙ (w3_e · x_row)]` over rows read
/// from `x`, through `ids` (`row -> x[ids[row]]`, rows with an id outside
/// [0, numSources) read as zero rows) or directly (`row -> x[row]`).
struct GroupedMLP {
  Value x, ids, numSources;
  Value w1, w2, w3; ///< [E, F, W], [E, W, F] (`stacked`) or [F, W], [W, F].
  /// The weights of a phase pre-packed in the panel layout
  /// (packedPanelColumns), when they are: then w1/w3 or w2 are null.
  bool packedHidden = false, packedOutput = false;
  bool stacked;
  ExpertActivation activation;
  /// f32 expert biases b1, b3 [E, F] and b2 [E, W] (or null), and the
  /// expert of every row, `rowExpert [S]` (index), when there are biases.
  Value b1, b3, b2, rowExpert;
  /// The per-expert output scale [E] (or null).
  Value scale;
  int64_t hidden, width;
};
} // namespace

/// The pre-packed weights behind `w` ([(E,) N, K]) when `w` is their
/// `linalg.unpack` from the panel layout of `tileCols` columns, else null.
/// Reading the packed buffer leaves the unpack dead: it never runs.
static Value packedPanelSource(Value w, int64_t tileCols) {
  auto unpack = w.getDefiningOp<linalg::UnPackOp>();
  if (!unpack)
    return {};
  int64_t rank = cast<ShapedType>(w.getType()).getRank();
  ArrayRef<int64_t> perm = unpack.getOuterDimsPerm();
  if (!perm.empty() && !isIdentityPermutation(perm))
    return {};
  if (unpack.getInnerDimsPos() != ArrayRef<int64_t>{rank - 2} ||
      unpack.getStaticInnerTiles() != ArrayRef<int64_t>{tileCols})
    return {};
  return unpack.getSource();
}

/// The weights, activation and sizes of `op` (expert_ffn or shared_expert:
/// w1 is [(E,) F, W]) into `mlp`. A phase whose weights all come pre-packed
/// in the panel layout reads them packed.
template <typename OpTy>
static void readWeights(OpBuilder &b, Location loc, OpTy op, bool stacked,
                        const CPUKernelConfig &config, GroupedMLP &mlp) {
  auto w1Type = cast<ShapedType>(op.getW1().getType());
  bool gated = static_cast<bool>(op.getW3());
  int64_t hiddenCols = packedPanelColumns(config, gated ? 2 : 1);
  Value w1 = packedPanelSource(op.getW1(), hiddenCols);
  Value w3 = gated ? packedPanelSource(op.getW3(), hiddenCols) : Value();
  mlp.packedHidden = w1 && (!gated || w3);
  if (!mlp.packedHidden) {
    w1 = op.getW1();
    w3 = op.getW3();
  }
  mlp.w1 = readBuffer(b, loc, w1);
  mlp.w3 = gated ? readBuffer(b, loc, w3) : Value();
  Value w2 = packedPanelSource(op.getW2(), packedPanelColumns(config, 1));
  mlp.packedOutput = static_cast<bool>(w2);
  mlp.w2 = readBuffer(b, loc, w2 ? w2 : op.getW2());
  mlp.stacked = stacked;
  mlp.activation = ExpertActivation::of(op);
  mlp.hidden = w1Type.getDimSize(w1Type.getRank() - 2);
  mlp.width = w1Type.getDimSize(w1Type.getRank() - 1);
}

static Value loadIndex(OpBuilder &b, Location loc, Value buffer, Value i) {
  Value v = memref::LoadOp::create(b, loc, buffer, ValueRange{i});
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
}

/// Whether the i32 id of `row` names a source row, and that row (0 if not).
static std::pair<Value, Value> sourceRow(OpBuilder &b, Location loc,
                                         const GroupedMLP &mlp, Value row) {
  if (!mlp.ids)
    return {Value(), row};
  Value id = memref::LoadOp::create(b, loc, mlp.ids, ValueRange{row});
  Value id64 = arith::ExtSIOp::create(b, loc, b.getI64Type(), id);
  Value size =
      arith::IndexCastOp::create(b, loc, b.getI64Type(), mlp.numSources);
  Value zero = arith::ConstantIntOp::create(b, loc, 0, 64);
  Value valid = arith::AndIOp::create(
      b, loc,
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, id64, zero),
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, id64, size));
  Value safe = arith::SelectOp::create(b, loc, valid, id64, zero);
  return {valid, arith::IndexCastOp::create(b, loc, b.getIndexType(), safe)};
}

/// Row `col` of `w` (stacked: of expert `e`).
static RowRef weightRow(Value w, bool stacked, Value e, Value col) {
  RowRef ref{w, {}};
  if (stacked)
    ref.prefix.push_back(e);
  ref.prefix.push_back(col);
  return ref;
}

/// Depth `k` of column tile `tile` of the packed `w` (stacked: of expert e).
static RowRef packedRow(Value w, bool stacked, Value e, Value tile, Value k) {
  RowRef ref = weightRow(w, stacked, e, tile);
  ref.prefix.push_back(k);
  return ref;
}

/// The kernel configuration of a phase: packed weights need the panels.
static CPUKernelConfig phaseConfig(const CPUKernelConfig &config,
                                   bool packed) {
  CPUKernelConfig result = config;
  result.panelExperts |= packed;
  return result;
}

/// Weight rows [n, n + count) of `w` (stacked: of expert `e`).
static void appendWeightRows(OpBuilder &b, Location loc, Value w, bool stacked,
                             Value e, Value n, int64_t count,
                             SmallVectorImpl<RowRef> &rows) {
  for (int64_t c = 0; c < count; ++c)
    rows.push_back(weightRow(
        w, stacked, e,
        arith::AddIOp::create(b, loc, n, indexConstant(b, loc, c))));
}

/// `v` into buffer[row, n ..] (only the lanes of `mask`, when given).
static void storeColumns(OpBuilder &b, Location loc, Value v, Value buffer,
                         Value row, Value n, Value mask) {
  if (mask)
    vector::MaskedStoreOp::create(b, loc, buffer, ValueRange{row, n}, mask, v);
  else
    vector::StoreOp::create(b, loc, v, buffer, ValueRange{row, n});
}

/// buffer[row, n ..] as a vector like `like` (masked-off lanes read as 0).
static Value loadColumns(OpBuilder &b, Location loc, Value buffer, Value row,
                         Value n, Value mask, Type type) {
  if (!mask)
    return vector::LoadOp::create(b, loc, type, buffer, ValueRange{row, n});
  Value zero = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(cast<VectorType>(type),
                                     b.getF32FloatAttr(0.0f)));
  return vector::MaskedLoadOp::create(b, loc, type, buffer, ValueRange{row, n},
                                      mask, zero);
}

/// `bias[e, n ..]` of the expert `e` of `row`, shaped like `like` (a vector
/// of columns from `n`, only the lanes of `mask` when given, or the scalar at
/// column `n`).
static Value loadExpertBias(OpBuilder &b, Location loc, const GroupedMLP &mlp,
                            Value bias, Value row, Value n, Value mask,
                            Type like) {
  Value e = memref::LoadOp::create(b, loc, mlp.rowExpert, ValueRange{row});
  if (isa<VectorType>(like))
    return loadColumns(b, loc, bias, e, n, mask, like);
  return memref::LoadOp::create(b, loc, bias, ValueRange{e, n});
}

/// The expert's output `y` (scalar or vector at columns `n ..`) with its
/// bias b2 added and its scale applied, when the MLP has them.
static Value finishExpertOutput(OpBuilder &b, Location loc,
                                const GroupedMLP &mlp, Value row, Value n,
                                Value mask, Value y) {
  if (mlp.b2)
    y = arith::AddFOp::create(
        b, loc, y,
        loadExpertBias(b, loc, mlp, mlp.b2, row, n, mask, y.getType()));
  if (mlp.scale) {
    Value e = memref::LoadOp::create(b, loc, mlp.rowExpert, ValueRange{row});
    Value s = memref::LoadOp::create(b, loc, mlp.scale, ValueRange{e});
    if (isa<VectorType>(y.getType()))
      s = vector::BroadcastOp::create(b, loc, y.getType(), s);
    y = arith::MulFOp::create(b, loc, s, y);
  }
  return y;
}

/// `act(z1) [⊙ z3]` of the hidden phase, zero for rows whose id names no
/// source row; on scalars or vectors (the activation lane by lane). With
/// biases, b1/b3 of the row's expert at columns `n ..` are added first.
static Value buildHiddenValue(OpBuilder &b, Location loc, const GroupedMLP &mlp,
                              Value row, Value z1, Value z3, Value n = {},
                              Value mask = {}) {
  if (mlp.b1)
    z1 = arith::AddFOp::create(
        b, loc, z1,
        loadExpertBias(b, loc, mlp, mlp.b1, row, n, mask, z1.getType()));
  if (z3 && mlp.b3)
    z3 = arith::AddFOp::create(
        b, loc, z3,
        loadExpertBias(b, loc, mlp, mlp.b3, row, n, mask, z3.getType()));
  auto act = [&](OpBuilder &lb, Location lloc, Value z) {
    return buildGateActivation(lb, lloc, mlp.activation, z);
  };
  Value h = isa<VectorType>(z1.getType()) ? mapLanes(b, loc, z1, act)
                                          : act(b, loc, z1);
  if (z3)
    h = arith::MulFOp::create(b, loc, h,
                              buildUpValue(b, loc, mlp.activation, z3));
  // A zero row gives act(0) (⊙ (0 + offset)) = 0 for every activation.
  if (Value valid = sourceRow(b, loc, mlp, row).first) {
    Value zero = arith::ConstantOp::create(
        b, loc, b.getZeroAttr(h.getType()));
    h = arith::SelectOp::create(b, loc, valid, h, zero);
  }
  return h;
}

/// Phase 1: hidden[row, f] for every row of every item.
static void buildHiddenPhase(OpBuilder &b, Location loc,
                             const CPUKernelConfig &baseConfig,
                             const GroupedMLP &mlp, Value numItems,
                             ItemRowsFn itemRows, Value hidden) {
  CPUKernelConfig config = phaseConfig(baseConfig, mlp.packedHidden);
  bool gated = static_cast<bool>(mlp.w3);
  auto xRow = [&](OpBuilder &rb, Location rloc, Value row) {
    return RowRef{mlp.x, {sourceRow(rb, rloc, mlp, row).second}};
  };
  auto packedWeights = [&](OpBuilder &, Location, Value e, int64_t group,
                           Value tile, Value k) {
    return packedRow(group == 0 ? mlp.w1 : mlp.w3, mlp.stacked, e, tile, k);
  };
  if (config.panelExperts) {
    buildTiledPanelProducts(
        b, loc, config, numItems, itemRows, mlp.hidden, gated ? 2 : 1,
        mlp.width, xRow,
        [&](OpBuilder &, Location, Value e, int64_t group, Value col) {
          return weightRow(group == 0 ? mlp.w1 : mlp.w3, mlp.stacked, e, col);
        },
        [&](OpBuilder &eb, Location eloc, Value row, Value n, Value mask,
            ArrayRef<Value> vectors) {
          Value h = buildHiddenValue(eb, eloc, mlp, row, vectors[0],
                                     gated ? vectors[1] : Value(), n, mask);
          storeColumns(eb, eloc, h, hidden, row, n, mask);
        },
        mlp.packedHidden ? PackedPanelFn(packedWeights) : nullptr);
    return;
  }
  int64_t colsPerTile =
      gated ? std::max<int64_t>(1, config.colTile / 2) : config.colTile;
  buildTiledRowDots(
      b, loc, config, numItems, itemRows, mlp.hidden, colsPerTile, mlp.width,
      xRow,
      [&](OpBuilder &wb, Location wloc, Value e, Value n, int64_t count) {
        SmallVector<RowRef> rows;
        appendWeightRows(wb, wloc, mlp.w1, mlp.stacked, e, n, count, rows);
        if (gated)
          appendWeightRows(wb, wloc, mlp.w3, mlp.stacked, e, n, count, rows);
        return rows;
      },
      [&](OpBuilder &eb, Location eloc, Value row, Value n, int64_t count,
          ArrayRef<Value> dots) {
        for (int64_t c = 0; c < count; ++c) {
          Value col =
              arith::AddIOp::create(eb, eloc, n, indexConstant(eb, eloc, c));
          Value h = buildHiddenValue(eb, eloc, mlp, row, dots[c],
                                     gated ? dots[count + c] : Value(), col);
          memref::StoreOp::create(eb, eloc, h, hidden, ValueRange{row, col});
        }
      });
}

/// out[row, d] = combine(row, from[row, d], w2_e[d] · hidden[row]) for every
/// row and model column d (`combine` works on scalars and on vectors).
using CombineFn = function_ref<Value(OpBuilder &, Location, Value row,
                                     Value before, Value y)>;

/// Phase 2: the second matmul and its combine into `out`.
static void buildOutputPhase(OpBuilder &b, Location loc,
                             const CPUKernelConfig &baseConfig,
                             const GroupedMLP &mlp, Value numItems,
                             ItemRowsFn itemRows, Value hidden, Value from,
                             Value out, CombineFn combine) {
  CPUKernelConfig config = phaseConfig(baseConfig, mlp.packedOutput);
  auto hiddenRow = [&](OpBuilder &, Location, Value row) {
    return RowRef{hidden, {row}};
  };
  auto packedWeights = [&](OpBuilder &, Location, Value e, int64_t,
                           Value tile, Value k) {
    return packedRow(mlp.w2, mlp.stacked, e, tile, k);
  };
  if (config.panelExperts) {
    buildTiledPanelProducts(
        b, loc, config, numItems, itemRows, mlp.width, /*numGroups=*/1,
        mlp.hidden, hiddenRow,
        [&](OpBuilder &, Location, Value e, int64_t, Value col) {
          return weightRow(mlp.w2, mlp.stacked, e, col);
        },
        [&](OpBuilder &eb, Location eloc, Value row, Value n, Value mask,
            ArrayRef<Value> vectors) {
          Value y =
              finishExpertOutput(eb, eloc, mlp, row, n, mask, vectors[0]);
          Value before =
              loadColumns(eb, eloc, from, row, n, mask, y.getType());
          storeColumns(eb, eloc, combine(eb, eloc, row, before, y), out, row,
                       n, mask);
        },
        mlp.packedOutput ? PackedPanelFn(packedWeights) : nullptr);
    return;
  }
  buildTiledRowDots(
      b, loc, config, numItems, itemRows, mlp.width, config.colTile,
      mlp.hidden, hiddenRow,
      [&](OpBuilder &wb, Location wloc, Value e, Value n, int64_t count) {
        SmallVector<RowRef> rows;
        appendWeightRows(wb, wloc, mlp.w2, mlp.stacked, e, n, count, rows);
        return rows;
      },
      [&](OpBuilder &eb, Location eloc, Value row, Value n, int64_t count,
          ArrayRef<Value> dots) {
        for (int64_t c = 0; c < count; ++c) {
          Value col =
              arith::AddIOp::create(eb, eloc, n, indexConstant(eb, eloc, c));
          Value before =
              memref::LoadOp::create(eb, eloc, from, ValueRange{row, col});
          Value y =
              finishExpertOutput(eb, eloc, mlp, row, col, Value(), dots[c]);
          memref::StoreOp::create(eb, eloc, combine(eb, eloc, row, before, y),
                                  out, ValueRange{row, col});
        }
      });
}

/// Work items that are blocks of `rowBlock` consecutive rows of [0, rows),
/// all with expert 0.
static RowRange uniformRowBlock(OpBuilder &b, Location loc, Value item,
                                int64_t rowBlock, Value rows) {
  Value block = indexConstant(b, loc, rowBlock);
  Value begin = arith::MulIOp::create(b, loc, item, block);
  Value end = arith::MinUIOp::create(
      b, loc, arith::AddIOp::create(b, loc, begin, block), rows);
  return {indexConstant(b, loc, 0), begin, end};
}

static Value ceilDiv(OpBuilder &b, Location loc, Value x, int64_t d) {
  return arith::CeilDivUIOp::create(b, loc, x, indexConstant(b, loc, d));
}

static int64_t staticDim(Value v, int64_t d) {
  return cast<ShapedType>(v.getType()).getDimSize(d);
}

//===----------------------------------------------------------------------===//
// moe.expert_ffn
//===----------------------------------------------------------------------===//

namespace {
struct ExpertFFNToCPU : FastCPUPattern<ExpertFFNOp> {
  using FastCPUPattern::FastCPUPattern;

  LogicalResult matchAndRewrite(ExpertFFNOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    int64_t numExperts = staticDim(op.getW1(), 0);
    int64_t hidden = staticDim(op.getW1(), 1);
    int64_t width = staticDim(op.getW1(), 2);
    if (ShapedType::isDynamic(numExperts) || ShapedType::isDynamic(hidden) ||
        ShapedType::isDynamic(width))
      return b.notifyMatchFailure(op, "expects static weight shapes");

    // Gather on load: rows read x through the slot's token id. A scaled
    // gather (Llama 4) is materialised and its rows read as they are.
    GroupedMLP mlp;
    Value rows = op.getRows(), gatherIds;
    if (auto gather = rows.getDefiningOp<GatherOp>(); gather && !gather.getScale()) {
      gatherIds = gather.getTokenIds();
      mlp.x = readBuffer(b, loc, gather.getInput());
      mlp.ids = readBuffer(b, loc, gather.getTokenIds());
      mlp.numSources = getDimSize(b, loc, gather.getInput(), 0);
    } else {
      mlp.x = readBuffer(b, loc, rows);
    }
    readWeights(b, loc, op, /*stacked=*/true, config, mlp);

    // The row count from the gather's ids, so the gathered copy is dead.
    Value numRows = getDimSize(
        b, loc, gatherIds ? gatherIds : rows, 0);
    Value offsets = readBuffer(b, loc, op.getOffsets());

    // Work items: each expert's segment cut into blocks of rowBlock rows.
    // Segments are clamped into [0, S) and kept non-overlapping, so bad
    // offsets can neither reach outside the buffers nor race.
    int64_t rowBlock = config.rowBlock;
    Value maxItems = arith::AddIOp::create(
        b, loc, ceilDiv(b, loc, numRows, rowBlock),
        indexConstant(b, loc, numExperts));
    auto itemType = MemRefType::get({ShapedType::kDynamic}, b.getIndexType());
    Value itemExpert = memref::AllocOp::create(b, loc, itemType, maxItems);
    // With biases, every row notes its expert (the epilogues read the bias
    // of the row's expert; rows outside every segment are never read).
    if (op.getB1()) {
      mlp.b1 = readBuffer(b, loc, op.getB1());
      mlp.b3 = op.getB3() ? readBuffer(b, loc, op.getB3()) : Value();
      mlp.b2 = readBuffer(b, loc, op.getB2());
    }
    if (op.getScale())
      mlp.scale = readBuffer(b, loc, op.getScale());
    if (mlp.b1 || mlp.scale)
      mlp.rowExpert = memref::AllocOp::create(b, loc, itemType, numRows);
    Value itemBegin = memref::AllocOp::create(b, loc, itemType, maxItems);
    Value itemEnd = memref::AllocOp::create(b, loc, itemType, maxItems);
    Value zero = indexConstant(b, loc, 0), one = indexConstant(b, loc, 1);
    Value block = indexConstant(b, loc, rowBlock);
    auto clampOffset = [&](OpBuilder &nb, Location nloc, Value e, Value low) {
      Value v = loadIndex(nb, nloc, offsets, e);
      v = arith::MaxSIOp::create(nb, nloc, v, low);
      return arith::MinSIOp::create(nb, nloc, v, numRows).getResult();
    };
    auto experts = scf::ForOp::create(
        b, loc, zero, indexConstant(b, loc, numExperts), one,
        ValueRange{zero, zero},
        [&](OpBuilder &eb, Location eloc, Value e, ValueRange state) {
          Value lo = clampOffset(eb, eloc, e, state[1]);
          Value next = arith::AddIOp::create(eb, eloc, e, one);
          Value hi = clampOffset(eb, eloc, next, lo);
          auto blocks = scf::ForOp::create(
              eb, eloc, lo, hi, block, ValueRange{state[0]},
              [&](OpBuilder &rb, Location rloc, Value r0, ValueRange count) {
                Value r1 = arith::MinUIOp::create(
                    rb, rloc, arith::AddIOp::create(rb, rloc, r0, block), hi);
                if (mlp.rowExpert)
                  scf::ForOp::create(
                      rb, rloc, r0, r1, one, ValueRange{},
                      [&](OpBuilder &sb, Location sloc, Value r, ValueRange) {
                        memref::StoreOp::create(sb, sloc, e, mlp.rowExpert,
                                                ValueRange{r});
                        scf::YieldOp::create(sb, sloc);
                      });
                memref::StoreOp::create(rb, rloc, e, itemExpert, count[0]);
                memref::StoreOp::create(rb, rloc, r0, itemBegin, count[0]);
                memref::StoreOp::create(rb, rloc, r1, itemEnd, count[0]);
                scf::YieldOp::create(
                    rb, rloc,
                    ValueRange{arith::AddIOp::create(rb, rloc, count[0], one)});
              });
          scf::YieldOp::create(eb, eloc,
                               ValueRange{blocks.getResult(0), hi});
        });
    Value numItems = experts.getResult(0);
    auto itemRows = [&](OpBuilder &ib, Location iloc, Value item) {
      return RowRange{
          memref::LoadOp::create(ib, iloc, itemExpert, ValueRange{item}),
          memref::LoadOp::create(ib, iloc, itemBegin, ValueRange{item}),
          memref::LoadOp::create(ib, iloc, itemEnd, ValueRange{item})};
    };

    auto hiddenType = MemRefType::get({ShapedType::kDynamic, hidden},
                                      b.getF32Type());
    Value hiddenBuf = memref::AllocOp::create(b, loc, hiddenType, numRows);
    buildHiddenPhase(b, loc, config, mlp, numItems, itemRows, hiddenBuf);

    // Rows outside every segment keep init: start from a copy of it.
    Value out = allocBufferLike(b, loc, op.getInit());
    memref::CopyOp::create(b, loc, readBuffer(b, loc, op.getInit()), out);
    buildOutputPhase(b, loc, config, mlp, numItems, itemRows, hiddenBuf,
                     /*from=*/out, out,
                     [&](OpBuilder &sb, Location sloc, Value, Value before,
                         Value y) {
                       return arith::AddFOp::create(sb, sloc, before, y)
                           .getResult();
                     });
    b.replaceOp(op, bufferToTensor(b, loc, out, op.getType()));
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// moe.shared_expert
//===----------------------------------------------------------------------===//

namespace {
struct SharedExpertToCPU : FastCPUPattern<SharedExpertOp> {
  using FastCPUPattern::FastCPUPattern;

  LogicalResult matchAndRewrite(SharedExpertOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    int64_t hidden = staticDim(op.getW1(), 0);
    int64_t width = staticDim(op.getW1(), 1);
    if (ShapedType::isDynamic(hidden) || ShapedType::isDynamic(width))
      return b.notifyMatchFailure(op, "expects static weight shapes");

    GroupedMLP mlp;
    mlp.x = readBuffer(b, loc, op.getInput());
    readWeights(b, loc, op, /*stacked=*/false, config, mlp);

    Value numTokens = getDimSize(b, loc, op.getInput(), 0);
    Value numItems = ceilDiv(b, loc, numTokens, config.rowBlock);
    auto itemRows = [&](OpBuilder &ib, Location iloc, Value item) {
      return uniformRowBlock(ib, iloc, item, config.rowBlock, numTokens);
    };

    // g[t] = σ(gate · x_t), one dot per token.
    Value gate;
    if (op.getGate()) {
      Value gateW = readBuffer(b, loc, op.getGate());
      gate = memref::AllocOp::create(
          b, loc, MemRefType::get({ShapedType::kDynamic}, b.getF32Type()),
          numTokens);
      buildTiledRowDots(
          b, loc, config, numItems, itemRows, /*numCols=*/1,
          /*colsPerTile=*/1, width,
          [&](OpBuilder &, Location, Value row) {
            return RowRef{mlp.x, {row}};
          },
          [&](OpBuilder &wb, Location wloc, Value, Value n, int64_t count) {
            SmallVector<RowRef> rows;
            appendWeightRows(wb, wloc, gateW, false, Value(), n, count, rows);
            return rows;
          },
          [&](OpBuilder &eb, Location eloc, Value row, Value, int64_t,
              ArrayRef<Value> dots) {
            memref::StoreOp::create(eb, eloc, buildSigmoid(eb, eloc, dots[0]),
                                    gate, ValueRange{row});
          });
    }

    auto hiddenType = MemRefType::get({ShapedType::kDynamic, hidden},
                                      b.getF32Type());
    Value hiddenBuf = memref::AllocOp::create(b, loc, hiddenType, numTokens);
    buildHiddenPhase(b, loc, config, mlp, numItems, itemRows, hiddenBuf);

    Value init = readBuffer(b, loc, op.getInit());
    Value out = allocBufferLike(b, loc, op.getInit());
    buildOutputPhase(
        b, loc, config, mlp, numItems, itemRows, hiddenBuf, init, out,
        [&](OpBuilder &sb, Location sloc, Value row, Value before, Value y) {
          if (gate) {
            Value g = memref::LoadOp::create(sb, sloc, gate, ValueRange{row});
            if (isa<VectorType>(y.getType()))
              g = vector::BroadcastOp::create(sb, sloc, y.getType(), g);
            y = arith::MulFOp::create(sb, sloc, g, y);
          }
          return arith::AddFOp::create(sb, sloc, before, y).getResult();
        });
    b.replaceOp(op, bufferToTensor(b, loc, out, op.getType()));
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// moe.linear
//===----------------------------------------------------------------------===//

namespace {
struct LinearToCPU : FastCPUPattern<LinearOp> {
  using FastCPUPattern::FastCPUPattern;

  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    int64_t outWidth = staticDim(op.getWeight(), 0);
    int64_t inWidth = staticDim(op.getWeight(), 1);
    if (ShapedType::isDynamic(outWidth) || ShapedType::isDynamic(inWidth))
      return b.notifyMatchFailure(op, "expects a static weight shape");
    Value x = readBuffer(b, loc, op.getInput());
    Value w = readBuffer(b, loc, op.getWeight());
    Value init = readBuffer(b, loc, op.getInit());
    Value out = allocBufferLike(b, loc, op.getInit());
    Value numTokens = getDimSize(b, loc, op.getInput(), 0);
    Value numItems = ceilDiv(b, loc, numTokens, config.rowBlock);
    buildTiledRowDots(
        b, loc, config, numItems,
        [&](OpBuilder &ib, Location iloc, Value item) {
          return uniformRowBlock(ib, iloc, item, config.rowBlock, numTokens);
        },
        outWidth, config.colTile, inWidth,
        [&](OpBuilder &, Location, Value row) { return RowRef{x, {row}}; },
        [&](OpBuilder &wb, Location wloc, Value, Value n, int64_t count) {
          SmallVector<RowRef> rows;
          appendWeightRows(wb, wloc, w, false, Value(), n, count, rows);
          return rows;
        },
        [&](OpBuilder &eb, Location eloc, Value row, Value n, int64_t count,
            ArrayRef<Value> dots) {
          for (int64_t c = 0; c < count; ++c) {
            Value col =
                arith::AddIOp::create(eb, eloc, n, indexConstant(eb, eloc, c));
            Value before =
                memref::LoadOp::create(eb, eloc, init, ValueRange{row, col});
            memref::StoreOp::create(eb, eloc, addF(eb, eloc, before, dots[c]),
                                    out, ValueRange{row, col});
          }
        });
    b.replaceOp(op, bufferToTensor(b, loc, out, op.getType()));
    return success();
  }
};
} // namespace

void mlir::moe::populateFastCPULoweringPatterns(RewritePatternSet &patterns,
                                                const CPUKernelConfig &config) {
  patterns.add<ExpertFFNToCPU, SharedExpertToCPU, LinearToCPU>(
      patterns.getContext(), config);
  populateFastCombinePatterns(patterns, config);
  populateFastProductKeyPatterns(patterns, config);
  populateFastPackPatterns(patterns, config);
}
