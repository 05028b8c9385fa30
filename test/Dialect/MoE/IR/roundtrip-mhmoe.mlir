// Round-trip of the MH-MoE reshapes (moe.token_split, moe.token_merge):
// custom form, generic form and bytecode print back to the same custom form,
// and print -> parse -> print is a fixed point.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s -emit-bytecode | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

// CHECK-LABEL: func.func @token_split_merge_dynamic
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>)
// CHECK:         %[[SUB:.*]] = moe.token_split %[[X]] heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
// CHECK:         %[[Y:.*]] = moe.token_merge %[[SUB]] heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
// CHECK:         return %[[Y]]
func.func @token_split_merge_dynamic(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %sub = moe.token_split %x heads(4) : tensor<?x64xf32> -> tensor<?x16xf32>
  %y = moe.token_merge %sub heads(4) : tensor<?x16xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @token_split_merge_static
// CHECK-SAME:    (%[[X:.*]]: tensor<8x64xf32>, %[[SUB:.*]]: tensor<64x8xf32>)
// CHECK:         %[[S:.*]] = moe.token_split %[[X]] heads(8) {moe.note = "mh"} : tensor<8x64xf32> -> tensor<64x8xf32>
// CHECK:         %[[M:.*]] = moe.token_merge %[[SUB]] heads(1) : tensor<64x8xf32> -> tensor<64x8xf32>
// CHECK:         return %[[S]], %[[M]]
func.func @token_split_merge_static(%x: tensor<8x64xf32>, %sub: tensor<64x8xf32>)
    -> (tensor<64x8xf32>, tensor<64x8xf32>) {
  %s = moe.token_split %x heads(8) {moe.note = "mh"}
      : tensor<8x64xf32> -> tensor<64x8xf32>
  %m = moe.token_merge %sub heads(1) : tensor<64x8xf32> -> tensor<64x8xf32>
  return %s, %m : tensor<64x8xf32>, tensor<64x8xf32>
}
