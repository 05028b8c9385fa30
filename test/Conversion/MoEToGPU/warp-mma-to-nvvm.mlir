// moe.warp_mma: its assembly round-trips, and convert-moe-warp-mma-to-nvvm
// makes it one nvvm.mma.sync m16n8k16 with bf16 multiplicands (A row-major,
// B column-major: rows of the [N, K] weight) and f32 accumulators, whose
// four results replace the op's in order.
// RUN: moe-opt %s | moe-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: moe-opt %s --convert-moe-warp-mma-to-nvvm | FileCheck %s

// ROUNDTRIP-LABEL: func.func @tile_step
// ROUNDTRIP:         %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = moe.warp_mma a(%arg0, %arg1, %arg2, %arg3) b(%arg4, %arg5) c(%arg6, %arg7, %arg8, %arg9)

// CHECK-LABEL: func.func @tile_step
// CHECK-SAME:    (%[[A0:[^:]*]]: i32, %[[A1:[^:]*]]: i32, %[[A2:[^:]*]]: i32, %[[A3:[^:]*]]: i32, %[[B0:[^:]*]]: i32, %[[B1:[^:]*]]: i32, %[[C0:[^:]*]]: f32, %[[C1:[^:]*]]: f32, %[[C2:[^:]*]]: f32, %[[C3:[^:]*]]: f32)
// CHECK:         %[[MMA:.*]] = nvvm.mma.sync A[%[[A0]], %[[A1]], %[[A2]], %[[A3]]] B[%[[B0]], %[[B1]]] C[%[[C0]], %[[C1]], %[[C2]], %[[C3]]]
// CHECK-SAME:      layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>
// CHECK-SAME:      multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>
// CHECK-SAME:      shape = #nvvm.shape<m = 16, n = 8, k = 16>
// CHECK-SAME:      -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK:         %[[D0:.*]] = llvm.extractvalue %[[MMA]][0]
// CHECK:         %[[D1:.*]] = llvm.extractvalue %[[MMA]][1]
// CHECK:         %[[D2:.*]] = llvm.extractvalue %[[MMA]][2]
// CHECK:         %[[D3:.*]] = llvm.extractvalue %[[MMA]][3]
// CHECK-NOT:     moe.warp_mma
// CHECK:         return %[[D2]], %[[D0]], %[[D3]], %[[D1]]
func.func @tile_step(%a0: i32, %a1: i32, %a2: i32, %a3: i32, %b0: i32, %b1: i32,
                     %c0: f32, %c1: f32, %c2: f32, %c3: f32) -> (f32, f32, f32, f32) {
  %d0, %d1, %d2, %d3 = moe.warp_mma a(%a0, %a1, %a2, %a3) b(%b0, %b1) c(%c0, %c1, %c2, %c3)
  return %d2, %d0, %d3, %d1 : f32, f32, f32, f32
}
