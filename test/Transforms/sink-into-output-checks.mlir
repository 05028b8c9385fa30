// RUN: moe-opt %s --moe-sink-into-output-checks -split-input-file | FileCheck %s

// The work that only an optional output needs moves under its NULL check;
// work that another output also needs, and work with memory effects, stay.

// CHECK-LABEL: func.func @optional_output
// CHECK-SAME:    (%[[X:.*]]: tensor<8xf32>, %[[OUT:.*]]: memref<8xf32>, %[[LOSS:.*]]: memref<f32>, %[[GIVEN:.*]]: i1, %[[M:.*]]: memref<f32>)
// CHECK:         %[[Y:.*]] = linalg.exp ins(%[[X]] : tensor<8xf32>)
// CHECK:         %[[READ:.*]] = memref.load %[[M]][]
// CHECK:         bufferization.materialize_in_destination %[[Y]] in restrict writable %[[OUT]]
// CHECK:         scf.if %[[GIVEN]] {
// CHECK:           %[[INIT:.*]] = tensor.empty() : tensor<f32>
// CHECK:           %[[ZERO:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[INIT]] : tensor<f32>)
// CHECK:           %[[SUM:.*]] = linalg.reduce ins(%[[Y]] : tensor<8xf32>) outs(%[[ZERO]] : tensor<f32>)
// CHECK:           %[[SCALED:.*]] = tensor.insert %[[READ]] into %[[SUM]][]
// CHECK:           bufferization.materialize_in_destination %[[SCALED]] in restrict writable %[[LOSS]]
// CHECK:         }
// CHECK-NEXT:    return
func.func @optional_output(%x: tensor<8xf32>, %out: memref<8xf32>, %loss: memref<f32>, %given: i1, %m: memref<f32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<8xf32>
  %y = linalg.exp ins(%x : tensor<8xf32>) outs(%e : tensor<8xf32>) -> tensor<8xf32>
  %init = tensor.empty() : tensor<f32>
  %filled = linalg.fill ins(%zero : f32) outs(%init : tensor<f32>) -> tensor<f32>
  %sum = linalg.reduce ins(%y : tensor<8xf32>) outs(%filled : tensor<f32>) dimensions = [0]
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  %read = memref.load %m[] : memref<f32>
  %scaled = tensor.insert %read into %sum[] : tensor<f32>
  bufferization.materialize_in_destination %y in restrict writable %out
      : (tensor<8xf32>, memref<8xf32>) -> ()
  scf.if %given {
    bufferization.materialize_in_destination %scaled in restrict writable %loss
        : (tensor<f32>, memref<f32>) -> ()
  }
  return
}

// -----

// Only an scf.if directly in the function body takes ops: the linalg.index
// that only a nested scf.if uses stays in its linalg.generic (upstream
// control-flow-sink would move it and break the generic).

// CHECK-LABEL: func.func @nested_if
// CHECK:         linalg.generic
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      %[[I:.*]] = linalg.index 0 : index
// CHECK-NEXT:      %{{.*}} = arith.cmpf
// CHECK-NEXT:      scf.if
// CHECK-NEXT:        arith.index_cast %[[I]]
func.func @nested_if(%x: tensor<8xf32>, %limit: f32) -> tensor<8xf32> {
  %e = tensor.empty() : tensor<8xf32>
  %r = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>],
                       iterator_types = ["parallel"]}
      ins(%x : tensor<8xf32>) outs(%e : tensor<8xf32>) {
  ^bb0(%in: f32, %o: f32):
    %i = linalg.index 0 : index
    %big = arith.cmpf ogt, %in, %limit : f32
    %v = scf.if %big -> f32 {
      %ii = arith.index_cast %i : index to i32
      %f = arith.sitofp %ii : i32 to f32
      scf.yield %f : f32
    } else {
      scf.yield %in : f32
    }
    linalg.yield %v : f32
  } -> tensor<8xf32>
  return %r : tensor<8xf32>
}
