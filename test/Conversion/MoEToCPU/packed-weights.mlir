// RUN: moe-opt --convert-moe-to-cpu="vector-width=8" --canonicalize -split-input-file %s | FileCheck %s

// Weights pre-packed by moe-pack-expert-weights reach expert_ffn through
// linalg.unpack; the kernels read the packed buffers instead: each FMA takes
// its weight vector straight from packed[e, tile, k, :] (bf16 widened in
// registers), with no transposes and no per-item panel, and the unpacks
// die unrun.
// CHECK-LABEL: func.func @packed_experts(
// CHECK-SAME:    %{{[^:]*}}: tensor<?x64xf32>, %{{[^:]*}}: tensor<5xi32>, %[[W1P:[^:]*]]: tensor<4x5x64x8xbf16>, %[[W3P:[^:]*]]: tensor<4x5x64x8xbf16>, %[[W2P:[^:]*]]: tensor<4x4x40x16xbf16>
// CHECK-NOT:     linalg.unpack
// CHECK-DAG:     %[[W1:.*]] = bufferization.to_buffer %[[W1P]] read_only : tensor<4x5x64x8xbf16> to memref<4x5x64x8xbf16>
// CHECK-DAG:     %[[W3:.*]] = bufferization.to_buffer %[[W3P]] read_only
// CHECK-DAG:     %[[W2:.*]] = bufferization.to_buffer %[[W2P]] read_only : tensor<4x4x40x16xbf16> to memref<4x4x40x16xbf16>
// Phase 1: w1 and w3 tiles of one vector each.
// CHECK:         scf.forall
// CHECK-NOT:     vector.shuffle
// CHECK:         %[[V1:.*]] = vector.load %[[W1]][%{{.*}}, %{{.*}}, %{{.*}}, %c0] : memref<4x5x64x8xbf16>, vector<8xbf16>
// CHECK:         arith.shli
// CHECK:         %[[V3:.*]] = vector.load %[[W3]][%{{.*}}, %{{.*}}, %{{.*}}, %c0] : memref<4x5x64x8xbf16>, vector<8xbf16>
// CHECK:         vector.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<8xf32>
// Phase 2: w2 tiles of two vectors, lanes 0-7 and 8-15 of a packed row.
// CHECK:         scf.forall
// CHECK-NOT:     vector.shuffle
// CHECK:         vector.load %[[W2]][%{{.*}}, %{{.*}}, %{{.*}}, %c0] : memref<4x4x40x16xbf16>, vector<8xbf16>
// CHECK:         vector.load %[[W2]][%{{.*}}, %{{.*}}, %{{.*}}, %c8] : memref<4x4x40x16xbf16>, vector<8xbf16>
// CHECK:         vector.fma
// CHECK-NOT:     vector.shuffle
// CHECK:         return
func.func @packed_experts(%rows: tensor<?x64xf32>, %offsets: tensor<5xi32>,
                          %w1p: tensor<4x5x64x8xbf16>, %w3p: tensor<4x5x64x8xbf16>,
                          %w2p: tensor<4x4x40x16xbf16>, %init: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %e1 = tensor.empty() : tensor<4x40x64xbf16>
  %w1 = linalg.unpack %w1p inner_dims_pos = [1] inner_tiles = [8] into %e1 : tensor<4x5x64x8xbf16> -> tensor<4x40x64xbf16>
  %e3 = tensor.empty() : tensor<4x40x64xbf16>
  %w3 = linalg.unpack %w3p inner_dims_pos = [1] inner_tiles = [8] into %e3 : tensor<4x5x64x8xbf16> -> tensor<4x40x64xbf16>
  %e2 = tensor.empty() : tensor<4x64x40xbf16>
  %w2 = linalg.unpack %w2p inner_dims_pos = [1] inner_tiles = [16] into %e2 : tensor<4x4x40x16xbf16> -> tensor<4x64x40xbf16>
  %y = moe.expert_ffn swiglu ins(%rows, %offsets, %w1, %w2 : tensor<?x64xf32>, tensor<5xi32>, tensor<4x40x64xbf16>, tensor<4x64x40xbf16>) up(%w3 : tensor<4x40x64xbf16>) outs(%init : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Packed in another layout (tiles of 4 columns, which no register tile of
// this target reads): the unpack stays and runs, and the kernel packs its
// panels from the unpacked weights as usual (in-register transposes).
// CHECK-LABEL: func.func @foreign_layout(
// CHECK:         linalg.unpack %{{.*}} inner_dims_pos = [0] inner_tiles = [4]
// CHECK:         vector.shuffle
func.func @foreign_layout(%x: tensor<?x16xf32>, %w1p: tensor<2x16x4xf32>, %w2: tensor<16x8xf32>,
                          %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %e = tensor.empty() : tensor<8x16xf32>
  %w1 = linalg.unpack %w1p inner_dims_pos = [0] inner_tiles = [4] into %e : tensor<2x16x4xf32> -> tensor<8x16xf32>
  %y = moe.shared_expert relu ins(%x, %w1, %w2 : tensor<?x16xf32>, tensor<8x16xf32>, tensor<16x8xf32>) outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Packing [E, N, K] bf16 weights: a parallel item per (expert, column tile)
// moves vw x vw blocks as 16-bit integers (x86 has no bf16 registers) through
// log2(vw) rounds of shuffles; N = 20 pads the last tile of 8 with zero rows
// and K = 20 ends in a tail whose packed rows are assembled lane by lane.
// CHECK-LABEL: func.func @pack_bf16(
// CHECK:         %[[OUT:.*]] = memref.alloc() : memref<3x3x20x8xbf16>
// CHECK:         scf.forall (%[[E:.*]], %[[T:.*]]) in (3, 3) {
// CHECK:           scf.for %[[K:.*]] = %c0 to %c16 step %c8 {
// CHECK:             scf.if
// CHECK:               vector.load %{{.*}}[%[[E]], %{{.*}}, %[[K]]] : memref<3x20x20xbf16>, vector<8xbf16>
// CHECK:               arith.bitcast %{{.*}} : vector<8xbf16> to vector<8xi16>
// CHECK-COUNT-24:    vector.shuffle
// CHECK:             arith.bitcast %{{.*}} : vector<8xi16> to vector<8xbf16>
// CHECK:             vector.store %{{.*}}, %[[OUT]][%[[E]], %[[T]], %{{.*}}, %c0] : memref<3x3x20x8xbf16>, vector<8xbf16>
// CHECK:           scf.for %[[K2:.*]] = %c16 to %c20 step %c1 {
// CHECK:             vector.from_elements {{.*}} : vector<8xi16>
// CHECK:             vector.store %{{.*}}, %[[OUT]][%[[E]], %[[T]], %[[K2]], %c0] : memref<3x3x20x8xbf16>, vector<8xbf16>
// CHECK:         bufferization.to_tensor %[[OUT]]
func.func @pack_bf16(%w: tensor<3x20x20xbf16>) -> tensor<3x3x20x8xbf16> {
  %e = tensor.empty() : tensor<3x3x20x8xbf16>
  %zero = arith.constant 0.0 : bf16
  %p = linalg.pack %w padding_value(%zero : bf16) inner_dims_pos = [1] inner_tiles = [8] into %e : tensor<3x20x20xbf16> -> tensor<3x3x20x8xbf16>
  return %p : tensor<3x3x20x8xbf16>
}

// -----

// A non-zero padding value is not the panel layout: left to
// moe-lower-pack-unpack.
// CHECK-LABEL: func.func @pack_nonzero_padding(
// CHECK:         linalg.pack
func.func @pack_nonzero_padding(%w: tensor<20x12xf32>) -> tensor<3x12x8xf32> {
  %e = tensor.empty() : tensor<3x12x8xf32>
  %one = arith.constant 1.0 : f32
  %p = linalg.pack %w padding_value(%one : f32) inner_dims_pos = [0] inner_tiles = [8] into %e : tensor<20x12xf32> -> tensor<3x12x8xf32>
  return %p : tensor<3x12x8xf32>
}
