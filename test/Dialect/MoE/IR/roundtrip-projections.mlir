// Round-trip of moe.linear: custom form, generic form and bytecode all print
// back to the same custom form, and print -> parse -> print is a fixed point.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s -emit-bytecode | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

// CHECK-LABEL: func.func @linear_f32_static
// CHECK-SAME:    (%[[X:.*]]: tensor<4x64xf32>, %[[W:.*]]: tensor<8x64xf32>, %[[INIT:.*]]: tensor<4x8xf32>)
// CHECK:         %[[P:.*]] = moe.linear ins(%[[X]], %[[W]] : tensor<4x64xf32>, tensor<8x64xf32>) outs(%[[INIT]] : tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK:         return %[[P]]
func.func @linear_f32_static(%x: tensor<4x64xf32>, %w: tensor<8x64xf32>,
                             %init: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %0 = moe.linear ins(%x, %w : tensor<4x64xf32>, tensor<8x64xf32>)
                  outs(%init : tensor<4x8xf32>) -> tensor<4x8xf32>
  return %0 : tensor<4x8xf32>
}

// CHECK-LABEL: func.func @linear_bf16_dynamic
// CHECK-SAME:    (%[[X:.*]]: tensor<?x64xf32>, %[[W:.*]]: tensor<8x64xbf16>, %[[INIT:.*]]: tensor<?x8xf32>)
// CHECK:         %[[P:.*]] = moe.linear ins(%[[X]], %[[W]] : tensor<?x64xf32>, tensor<8x64xbf16>) outs(%[[INIT]] : tensor<?x8xf32>) -> tensor<?x8xf32>
// CHECK:         return %[[P]]
func.func @linear_bf16_dynamic(%x: tensor<?x64xf32>, %w: tensor<8x64xbf16>,
                               %init: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %0 = moe.linear ins(%x, %w : tensor<?x64xf32>, tensor<8x64xbf16>)
                  outs(%init : tensor<?x8xf32>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// Every dim dynamic, f16 weight, and a discardable attribute kept by attr-dict.
// CHECK-LABEL: func.func @linear_f16_all_dynamic
// CHECK-SAME:    (%[[X:.*]]: tensor<?x?xf32>, %[[W:.*]]: tensor<?x?xf16>, %[[INIT:.*]]: tensor<?x?xf32>)
// CHECK:         %[[P:.*]] = moe.linear ins(%[[X]], %[[W]] : tensor<?x?xf32>, tensor<?x?xf16>) outs(%[[INIT]] : tensor<?x?xf32>) {moe.note = "router"} -> tensor<?x?xf32>
// CHECK:         return %[[P]]
func.func @linear_f16_all_dynamic(%x: tensor<?x?xf32>, %w: tensor<?x?xf16>,
                                  %init: tensor<?x?xf32>) -> tensor<?x?xf32> {
  %0 = moe.linear ins(%x, %w : tensor<?x?xf32>, tensor<?x?xf16>)
                  outs(%init : tensor<?x?xf32>) {moe.note = "router"}
                  -> tensor<?x?xf32>
  return %0 : tensor<?x?xf32>
}
