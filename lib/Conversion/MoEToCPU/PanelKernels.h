//===- PanelKernels.h - outer-product tiles on packed weight panels -*- C++ -*-===//
//
// The expert-MLP microkernel of the fast CPU lowering. Output columns are
// vector lanes: a register tile of rows x column vectors takes, for k = 0, 1,
// 2, ... in order, `acc = fma(broadcast(x[row, k]), panel[k, columns], acc)`,
// where the panel is a depth chunk of the tile's weight rows transposed in
// registers on the way in (packing; bf16/f16 widened to f32 once, so the FMA
// loop is the same for every weight type), or read as it is from weights
// packed ahead of time (moe-pack-expert-weights). Every output is therefore one FMA
// chain over k in order from zero: its bits depend on the depth alone, never
// on the rows around it, T, the tile sizes or the thread that ran it. Only
// the broadcast operand streams from L2 (a scalar per row and k), which is
// what lets large row blocks run at the FMA rate.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOCPU_PANELKERNELS_H
#define MOE_LIB_CONVERSION_MOETOCPU_PANELKERNELS_H

#include "RowDotKernels.h"

namespace mlir::moe::cpu {

/// Weight row `col` of group `group` (a gated MLP has two: w1 and w3) of
/// expert `expert`, read along its depth.
using PanelRowFn = function_ref<RowRef(OpBuilder &, Location, Value expert,
                                       int64_t group, Value col)>;

/// Consumes row `row`'s outputs for the `vw` columns from `n`: one f32
/// vector per group. `mask` (null when every lane is a column) marks the
/// lanes whose column is below the column count; the others are padding.
using PanelEpilogueFn =
    function_ref<void(OpBuilder &, Location, Value row, Value n, Value mask,
                      ArrayRef<Value> vectors)>;

/// Weights packed ahead of time in the panel layout (`packedPanelShape`):
/// row `k` of column tile `tile` of group `group` of expert `expert`, whose
/// elements are the tile's columns at depth k.
using PackedPanelFn = function_ref<RowRef(OpBuilder &, Location, Value expert,
                                          int64_t group, Value tile, Value k)>;

/// Columns of one register tile of each weight group: the width of a
/// packed panel. Weights [(E,) N, K] packed for the panel kernels are
/// [(E,) ceil(N / P), K, P] (the tail tile zero-padded): `linalg.pack` with
/// inner_dims_pos = [rank - 2] and inner_tiles = [P].
int64_t packedPanelColumns(const CPUKernelConfig &config, int64_t numGroups);

/// The tiled loop nest of the expert MLP phases: an scf.forall over (work
/// item, column block of `config.colBlock` columns); inside, register tiles
/// of `config.panelColVectors` column vectors (split over the groups) are
/// packed chunk by chunk of `config.panelDepthBlock` and run against the
/// item's rows `config.panelRowTile` at a time. `leftRow` must be f32.
/// With `packed`, the panels are read from the pre-packed weights instead
/// (no packing, one contiguous stream per tile; `weightRow` is unused), by
/// the same FMA chains, so the bits are those of the unpacked kernel.
void buildTiledPanelProducts(OpBuilder &b, Location loc,
                             const CPUKernelConfig &config, Value numItems,
                             ItemRowsFn itemRows, int64_t numCols,
                             int64_t numGroups, int64_t depth,
                             LeftRowFn leftRow, PanelRowFn weightRow,
                             PanelEpilogueFn epilogue,
                             PackedPanelFn packed = nullptr);

/// Transposes the square matrix whose rows are `rows` (n vectors of n
/// lanes, n a power of two, any element type) in registers: log2(n) rounds
/// of two-source `vector.shuffle`s. Pure data movement.
void transposeInRegisters(OpBuilder &b, Location loc,
                          MutableArrayRef<Value> rows);

/// `fn` applied to every lane of the f32 vector `v` (scalar code, e.g. an
/// activation with libm calls), reassembled into a vector.
Value mapLanes(OpBuilder &b, Location loc, Value v,
               function_ref<Value(OpBuilder &, Location, Value)> fn);

} // namespace mlir::moe::cpu

#endif // MOE_LIB_CONVERSION_MOETOCPU_PANELKERNELS_H
