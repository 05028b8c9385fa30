// RUN: moe-opt --convert-moe-to-cpu="vector-width=8 expert-kernel=row-dot row-tile=3 col-tile=4 row-block=16 col-block=64" -split-input-file %s | FileCheck %s
// RUN: moe-opt --convert-moe-to-cpu="vector-width=16 expert-kernel=row-dot" -split-input-file %s | FileCheck %s --check-prefix=W16
// RUN: moe-opt --convert-moe-to-cpu="vector-width=8 expert-kernel=row-dot depth-block=16" -split-input-file %s | FileCheck %s --check-prefix=CHUNK
// RUN: moe-opt --convert-moe-to-cpu="vector-width=8 panel-depth-block=16" -split-input-file %s | FileCheck %s --check-prefix=PANEL
// RUN: moe-opt --convert-moe-to-cpu="vector-width=16 panel-depth-block=16 l1-ways=8" -split-input-file %s | FileCheck %s --check-prefix=WAYS

// The expert path: the gather feeding expert_ffn is fused on load (each row
// reads x through its slot's token id; no gathered copy is built), work items
// come from the offsets, and both phases are scf.forall loops over
// (item, column block) whose hot loops are vector FMAs over k. bf16 weights
// are loaded as 16 bits and widened in registers.
// CHECK-LABEL: func.func @expert_path_bf16
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x64xf32>, %[[IDS:[a-zA-Z0-9_]+]]: tensor<?xi32>, %[[OFFS:[a-zA-Z0-9_]+]]: tensor<9xi32>
// CHECK-NOT:     moe.gather
// CHECK-NOT:     moe.expert_ffn
// CHECK-DAG:     %[[XB:.*]] = bufferization.to_buffer %[[X]] read_only : tensor<?x64xf32> to memref<?x64xf32>
// CHECK-DAG:     %[[IDB:.*]] = bufferization.to_buffer %[[IDS]] read_only : tensor<?xi32> to memref<?xi32>
// CHECK-DAG:     %[[W1B:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<8x128x64xbf16> to memref<8x128x64xbf16>
// CHECK:         %[[HID:.*]] = memref.alloc(%{{.*}}) : memref<?x128xf32>
// Phase 1: hidden columns of the items' rows.
// CHECK:         scf.forall (%[[ITEM:.*]], %[[BLK:.*]]) in (%{{.*}}, 2) {
// CHECK:           scf.for
// CHECK:             scf.for
// CHECK:               %[[TOK:.*]] = memref.load %[[IDB]][%{{.*}}] : memref<?xi32>
// 16-bit weights need two registers to widen, so the 3-row tile shrinks to
// 2 rows x 4 weight rows (w1 and w3 of two hidden columns): 8 accumulators.
// CHECK:               scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c8 iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK:                 %[[XV:.*]] = vector.load %[[XB]][%{{.*}}, %{{.*}}] : memref<?x64xf32>, vector<8xf32>
// CHECK:                 %[[WV:.*]] = vector.load %[[W1B]][%{{.*}}, %{{.*}}, %{{.*}}] : memref<8x128x64xbf16>, vector<8xbf16>
// CHECK:                 %[[BITS:.*]] = arith.bitcast %[[WV]] : vector<8xbf16> to vector<8xi16>
// CHECK:                 %[[WIDENED:.*]] = arith.extui %[[BITS]] : vector<8xi16> to vector<8xi32>
// CHECK:                 %[[SHL:.*]] = arith.shli %[[WIDENED]], %{{.*}} : vector<8xi32>
// CHECK:                 %[[F:.*]] = arith.bitcast %[[SHL]] : vector<8xi32> to vector<8xf32>
// CHECK:                 vector.fma %[[XV]], %[[F]], %{{.*}} : vector<8xf32>
// CHECK:               vector.reduction <add>, %{{.*}} : vector<8xf32> into f32
// CHECK:               math.exp
// CHECK:               memref.store %{{.*}}, %[[HID]][%{{.*}}, %{{.*}}] : memref<?x128xf32>
// A row remainder (1 row) gets its own static tile.
// CHECK:             scf.index_switch
// CHECK:             case 1 {
// Phase 2: model columns from the hidden rows, added to a copy of init.
// CHECK:         memref.copy
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (%{{.*}}, 1) {
// CHECK:                 vector.load %[[HID]][%{{.*}}, %{{.*}}] : memref<?x128xf32>, vector<8xf32>
// CHECK:                 vector.fma
// CHECK:         bufferization.to_tensor %{{.*}} restrict writable : memref<?x64xf32> to tensor<?x64xf32>
// Depths past depth-block: items with few rows take the whole depth, items
// with many take it in chunks, the lane accumulators kept in a stack buffer
// of the item between chunks.
// CHUNK-LABEL: func.func @expert_path_bf16
// CHUNK:         scf.forall
// CHUNK:           %[[FEW:.*]] = arith.cmpi ule, %{{.*}}, %c8 : index
// CHUNK:           scf.if %[[FEW]] {
// CHUNK:           } else {
// CHUNK:             %[[PARTIAL:.*]] = memref.alloca() : memref<128x{{[0-9]+}}x8xf32>
// CHUNK:             vector.load %[[PARTIAL]]
// CHUNK:             vector.fma
// CHUNK:             vector.store %{{.*}}, %[[PARTIAL]]
// CHUNK:             vector.reduction <add>
// The panel kernel: output columns are lanes. Items of at most 3 rows
// transpose each 8x8 block of weight rows in registers (three rounds of
// shuffles) and use it at once; larger items pack a 16-deep panel of the
// tile's w1 and w3 columns on the stack and run 6-row tiles on it, keeping
// the accumulators between chunks. Either way each output is one FMA chain
// over k of broadcast(x[row, k]) and the weight column.
// PANEL-LABEL: func.func @expert_path_bf16
// PANEL:         scf.forall
// PANEL:           %[[FEWP:.*]] = arith.cmpi ule, %{{.*}}, %c3 : index
// PANEL:           scf.if %[[FEWP]] {
// PANEL:             vector.shuffle %{{.*}}, %{{.*}} [0, 1, 2, 3, 8, 9, 10, 11] : vector<8xf32>, vector<8xf32>
// PANEL:             vector.shuffle %{{.*}}, %{{.*}} [0, 1, 8, 9, 4, 5, 12, 13] : vector<8xf32>, vector<8xf32>
// PANEL:             vector.shuffle %{{.*}}, %{{.*}} [0, 8, 2, 10, 4, 12, 6, 14] : vector<8xf32>, vector<8xf32>
// PANEL:             %[[XS:.*]] = memref.load %{{.*}}[%{{.*}}, %{{.*}}] : memref<?x64xf32>
// PANEL:             %[[SPLAT:.*]] = vector.broadcast %[[XS]] : f32 to vector<8xf32>
// PANEL:             vector.fma %[[SPLAT]], %{{.*}}, %{{.*}} : vector<8xf32>
// PANEL:           } else {
// PANEL:             %[[PANEL:.*]] = memref.alloca() : memref<16x16xf32>
// PANEL:             %[[SAVED:.*]] = memref.alloca() : memref<128x16xf32>
// PANEL:             vector.store %{{.*}}, %[[PANEL]][%{{.*}}, %c0] : memref<16x16xf32>, vector<8xf32>
// PANEL:             vector.store %{{.*}}, %[[PANEL]][%{{.*}}, %c8] : memref<16x16xf32>, vector<8xf32>
// PANEL:             scf.for %{{.*}} step %c6 {
// PANEL:               vector.load %[[SAVED]]
// PANEL:               vector.load %[[PANEL]][%{{.*}}, %c0] : memref<16x16xf32>, vector<8xf32>
// PANEL:               vector.broadcast
// PANEL:               vector.fma
// PANEL:               vector.store %{{.*}}, %[[SAVED]]
// W16-LABEL:  func.func @expert_path_bf16
// W16:          vector.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<16xf32>
// With 16 lanes the 32 registers would hold 14-row tiles next to one w1 and
// one w3 vector, but rows 4 KiB apart share an L1 set: the tile stops at the
// L1's ways.
// WAYS-LABEL: func.func @expert_path_bf16
// WAYS:         } else {
// WAYS:           %[[WIDE:.*]] = memref.alloca() : memref<16x32xf32>
// WAYS:           scf.for %{{.*}} step %c8 {
// WAYS:             vector.load %[[WIDE]][%{{.*}}, %c0] : memref<16x32xf32>, vector<16xf32>
// WAYS:             vector.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<16xf32>
func.func @expert_path_bf16(%x: tensor<?x64xf32>, %ids: tensor<?xi32>,
                            %offsets: tensor<9xi32>, %w1: tensor<8x128x64xbf16>,
                            %w2: tensor<8x64x128xbf16>, %w3: tensor<8x128x64xbf16>,
                            %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %c0 = arith.constant 0 : index
  %s = tensor.dim %ids, %c0 : tensor<?xi32>
  %empty = tensor.empty(%s) : tensor<?x64xf32>
  %rows = moe.gather ins(%x, %ids : tensor<?x64xf32>, tensor<?xi32>)
                     outs(%empty : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xbf16>, tensor<8x64x128xbf16>)
      up(%w3 : tensor<8x128x64xbf16>)
      outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Depths that are not a multiple of the vector width end in one masked step
// (lanes past the depth read 0), so no scalar loop remains; an expert_ffn on
// rows it does not gather reads them directly.
// CHECK-LABEL: func.func @expert_ffn_gelu_tails
// CHECK-NOT:     moe.expert_ffn
// CHECK:         scf.forall
// CHECK:           scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c8 iter_args
// CHECK:           vector.maskedload %{{.*}}, %{{.*}}, %{{.*}} : memref<?x20xf32>, vector<8xi1>, vector<8xf32> into vector<8xf32>
// CHECK:           vector.fma
// CHECK:           math.erf
// CHECK:         scf.forall
// CHECK:           vector.maskedload %{{.*}} : memref<?x13xf32>, vector<8xi1>, vector<8xf32> into vector<8xf32>
func.func @expert_ffn_gelu_tails(%rows: tensor<?x20xf32>, %offsets: tensor<4xi32>,
                                 %w1: tensor<3x13x20xf32>, %w2: tensor<3x20x13xf32>,
                                 %init: tensor<?x20xf32>) -> tensor<?x20xf32> {
  %y = moe.expert_ffn gelu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x20xf32>, tensor<4xi32>, tensor<3x13x20xf32>, tensor<3x20x13xf32>)
      outs(%init : tensor<?x20xf32>) -> tensor<?x20xf32>
  return %y : tensor<?x20xf32>
}

// -----

// The shared expert: the sigmoid gate is one dot per token, and scales the
// MLP's output before init is added.
// CHECK-LABEL: func.func @shared_expert_gated
// CHECK-NOT:     moe.shared_expert
// CHECK:         scf.forall
// CHECK:           vector.fma
// CHECK:           math.exp
// CHECK:         scf.forall
// CHECK:         scf.forall
// CHECK:           vector.fma
// CHECK:           arith.mulf
// CHECK:           arith.addf
func.func @shared_expert_gated(%x: tensor<?x16xf32>, %w1: tensor<32x16xf32>,
                               %w2: tensor<16x32xf32>, %w3: tensor<32x16xf32>,
                               %g: tensor<1x16xf32>,
                               %acc: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %out = moe.shared_expert swiglu
      ins(%x, %w1, %w2 : tensor<?x16xf32>, tensor<32x16xf32>, tensor<16x32xf32>)
      up(%w3 : tensor<32x16xf32>) gate(%g : tensor<1x16xf32>)
      outs(%acc : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %out : tensor<?x16xf32>
}

// -----

// A projection: one forall over (row block, column block); f16 weights are
// widened with arith.extf.
// CHECK-LABEL: func.func @linear_f16
// CHECK-NOT:     moe.linear
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (%{{.*}}, 1)
// CHECK:           vector.load %{{.*}} : memref<8x64xf16>, vector<8xf16>
// CHECK:           arith.extf %{{.*}} : vector<8xf16> to vector<8xf32>
// CHECK:           vector.fma
func.func @linear_f16(%x: tensor<?x64xf32>, %w: tensor<8x64xf16>,
                      %init: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %l = moe.linear ins(%x, %w : tensor<?x64xf32>, tensor<8x64xf16>)
                  outs(%init : tensor<?x8xf32>) -> tensor<?x8xf32>
  return %l : tensor<?x8xf32>
}

// -----

// combine: a counting sort lists each token's slots in slot order, then
// token blocks run in parallel, each token summing its slots in that order
// (acc + w·y), vectorised along the model dim with a masked tail.
// CHECK-LABEL: func.func @combine_tail
// CHECK-NOT:     moe.combine
// CHECK:         scf.for
// CHECK:         scf.for
// CHECK:         scf.for
// CHECK:         scf.forall
// CHECK:           vector.broadcast
// CHECK:           arith.mulf %{{.*}}, %{{.*}} : vector<8xf32>
// CHECK:           arith.addf %{{.*}}, %{{.*}} : vector<8xf32>
// CHECK:           vector.store
// CHECK:           vector.maskedstore
func.func @combine_tail(%y: tensor<?x12xf32>, %ids: tensor<?xi32>, %w: tensor<?xf32>,
                        %acc: tensor<?x12xf32>) -> tensor<?x12xf32> {
  %out = moe.combine ins(%y, %ids, %w : tensor<?x12xf32>, tensor<?xi32>, tensor<?xf32>)
                     outs(%acc : tensor<?x12xf32>) -> tensor<?x12xf32>
  return %out : tensor<?x12xf32>
}
