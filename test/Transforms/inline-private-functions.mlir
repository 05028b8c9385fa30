// RUN: moe-opt %s --moe-inline-private-functions | FileCheck %s

// Calls of private functions are inlined, through every level, and the
// private functions left without calls are erased. Public functions stay
// called; declarations cannot be inlined.

// CHECK-LABEL: func.func @entry(
// CHECK-SAME:    %[[X:.*]]: tensor<8xf32>
// CHECK-NOT:     call @impl
// CHECK-NOT:     call @layer
// CHECK:         %[[Y:.*]] = arith.addf %[[X]], %[[X]] : tensor<8xf32>
// CHECK:         call @public_layer(%[[Y]])
// CHECK:         call @external(%[[Y]])
// CHECK-NOT:     func.func private @impl
// CHECK-NOT:     func.func private @layer
// CHECK-LABEL: func.func @public_layer(
// CHECK:       func.func private @external(
func.func @entry(%x: tensor<8xf32>) -> tensor<8xf32> {
  %r = call @impl(%x) : (tensor<8xf32>) -> tensor<8xf32>
  return %r : tensor<8xf32>
}

func.func private @impl(%x: tensor<8xf32>) -> tensor<8xf32> {
  %y = call @layer(%x) : (tensor<8xf32>) -> tensor<8xf32>
  %p = call @public_layer(%y) : (tensor<8xf32>) -> tensor<8xf32>
  %e = call @external(%y) : (tensor<8xf32>) -> tensor<8xf32>
  return %p : tensor<8xf32>
}

func.func private @layer(%x: tensor<8xf32>) -> tensor<8xf32> {
  %y = arith.addf %x, %x : tensor<8xf32>
  return %y : tensor<8xf32>
}

func.func @public_layer(%x: tensor<8xf32>) -> tensor<8xf32> {
  %y = arith.mulf %x, %x : tensor<8xf32>
  return %y : tensor<8xf32>
}

func.func private @external(tensor<8xf32>) -> tensor<8xf32>
