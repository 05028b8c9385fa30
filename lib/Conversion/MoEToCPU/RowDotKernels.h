//===- RowDotKernels.h - vectorised row-dot tiles for the CPU ----*- C++ -*-===//
//
// The one microkernel of the fast CPU lowering: dot products of a few rows
// against a few weight rows in the PyTorch [out, in] layout, on buffers. Every
// dot product is accumulated the same way wherever it appears (lane l of a
// vector accumulator takes k = l, l + V, l + 2V, ... by FMA; the lanes are
// then summed in order), so its bits depend on the depth and the vector width
// only: never on the tile it was computed in, the number of rows, T or the
// thread that ran it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOCPU_ROWDOTKERNELS_H
#define MOE_LIB_CONVERSION_MOETOCPU_ROWDOTKERNELS_H

#include "moe/Conversion/MoEToCPU/MoEToCPU.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/STLFunctionalExtras.h"

namespace mlir::moe::cpu {

/// A row of a buffer read along its last dim: `buffer[prefix..., k]`.
struct RowRef {
  Value buffer;
  SmallVector<Value> prefix;
};

/// `vw` consecutive elements of `row` from column `k` as an f32 vector
/// (bf16/f16 widened in registers, so weights move as 16 bits). With `mask`
/// only the active lanes are read; the others are 0.
Value loadRowVector(OpBuilder &b, Location loc, const RowRef &row, Value k,
                    int64_t vw, Value mask = {});

/// `loadRowVector` of the first `lanes` elements (the others 0). A partial
/// vector of 16-bit floats is read element by element: LLVM's x86 lowering
/// of masked bf16/f16 vector loads calls conversion routines the kernels do
/// not link (__truncsfbf2).
Value loadRowPrefix(OpBuilder &b, Location loc, const RowRef &row, Value k,
                    int64_t vw, int64_t lanes);

/// Accumulates `a_i[k] · b_j[k]` for k in [kBegin, kBegin + depth) into the
/// lane accumulators `accsIn` (vector<vw x f32>, i-major; empty: start from
/// zero) and returns them. `depth` is static; a depth that is not a multiple
/// of vw ends in one masked step.
SmallVector<Value> buildDotAccumulate(OpBuilder &b, Location loc,
                                      ArrayRef<RowRef> aRows,
                                      ArrayRef<RowRef> bRows, Value kBegin,
                                      int64_t depth, int64_t vw,
                                      ValueRange accsIn);

/// The lanes of each accumulator summed in lane order (the dot products).
SmallVector<Value> reduceAccumulators(OpBuilder &b, Location loc,
                                      ValueRange accs);

/// `out[i * |bRows| + j] = Σ_{k < depth} a_i[k] · b_j[k]` (f32), accumulated
/// as described in the file comment.
SmallVector<Value> buildDotTile(OpBuilder &b, Location loc,
                                ArrayRef<RowRef> aRows, ArrayRef<RowRef> bRows,
                                int64_t depth, int64_t vw);

/// Loops `m` over [lo, hi) in steps of `tile` and calls `body(m, count)` with
/// `count` the static number of rows at m: `tile`, or the remainder of the
/// last step (1 .. tile-1), each remainder its own static instance.
void buildRowTiles(OpBuilder &b, Location loc, Value lo, Value hi,
                   int64_t tile,
                   function_ref<void(OpBuilder &, Location, Value, int64_t)>
                       body);

/// `buildRowTiles` that hands `body` the tile's row ids and their left rows.
void buildLeftRowTiles(
    OpBuilder &b, Location loc, Value lo, Value hi, int64_t tile,
    function_ref<RowRef(OpBuilder &, Location, Value)> leftRow,
    function_ref<void(OpBuilder &, Location, ArrayRef<Value>, ArrayRef<RowRef>)>
        body);

/// Loops `n` over [lo, hi) in steps of `tile` where `hi - lo` is a multiple of
/// `tile` except perhaps for a final `tail` (static, < tile) columns; calls
/// `body(n, count)` with the static count.
void buildColumnTiles(OpBuilder &b, Location loc, Value lo, Value hi,
                      int64_t tile, int64_t tail,
                      function_ref<void(OpBuilder &, Location, Value, int64_t)>
                          body);

/// An `scf.forall` over [0, n_0) x [0, n_1) x ... on buffers; `body` gets the
/// induction variables. The forall is what moe-outline-parallel-loops hands
/// to the runtime's thread pool.
void buildParallelLoop(
    OpBuilder &b, Location loc, ValueRange upperBounds,
    function_ref<void(OpBuilder &, Location, ValueRange)> body);

/// The rows [begin, end) of work item `i` and the expert (weight slice) they
/// use.
struct RowRange {
  Value expert, begin, end;
};
using ItemRowsFn = function_ref<RowRange(OpBuilder &, Location, Value item)>;
/// The row `row` of the left operand.
using LeftRowFn = function_ref<RowRef(OpBuilder &, Location, Value row)>;
/// The `count` weight rows starting at column `n` for expert `expert` (for a
/// gated expert: its `count` w1 rows then its `count` w3 rows).
using WeightRowsFn = function_ref<SmallVector<RowRef>(
    OpBuilder &, Location, Value expert, Value n, int64_t count)>;
/// Consumes the dots of row `row` with the weight rows of columns
/// [n, n + count) (all of `WeightRowsFn`'s rows, in its order).
using EpilogueFn = function_ref<void(OpBuilder &, Location, Value row, Value n,
                                     int64_t count, ArrayRef<Value> dots)>;

/// The tiled row-dot loop nest of every fast kernel: an scf.forall over
/// (work item, column block of `config.colBlock` columns); inside, column
/// tiles of `colsPerTile` outer and row tiles of `config.rowTile` inner, each
/// a `buildDotTile` of depth `depth` whose results go to `epilogue`. A depth
/// beyond `config.depthBlock` is taken in chunks, the lane accumulators kept
/// in a per-item stack buffer between chunks (same bits, cache-sized
/// operands).
void buildTiledRowDots(OpBuilder &b, Location loc,
                       const CPUKernelConfig &config, Value numItems,
                       ItemRowsFn itemRows, int64_t numCols,
                       int64_t colsPerTile, int64_t depth, LeftRowFn leftRow,
                       WeightRowsFn weightRows, EpilogueFn epilogue);

/// A constant `vector<vw x i1>` whose first `count` lanes are set.
Value buildPrefixMask(OpBuilder &b, Location loc, int64_t vw, int64_t count);

/// An index constant.
Value indexConstant(OpBuilder &b, Location loc, int64_t value);

/// `bufferization.to_buffer` of a tensor read by the kernel (identity layout).
Value readBuffer(OpBuilder &b, Location loc, Value tensor);

/// A new buffer shaped like the (possibly dynamic) tensor type `type`, sizes
/// from `like` (a tensor of the same shape).
Value allocBufferLike(OpBuilder &b, Location loc, Value like);

/// The tensor of a buffer the kernel wrote (the only alias of it).
Value bufferToTensor(OpBuilder &b, Location loc, Value buffer, Type type);

} // namespace mlir::moe::cpu

#endif // MOE_LIB_CONVERSION_MOETOCPU_ROWDOTKERNELS_H
