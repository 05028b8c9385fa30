// RUN: moe-opt %s --moe-eliminate-result-allocs -split-input-file | FileCheck %s

// A kernel's fresh result buffer, materialized in a caller's buffer that
// dominates it: the kernel writes the caller's buffer, nothing is copied.

// CHECK-LABEL: func.func @kernel_result
// CHECK-SAME:    (%[[DEST:.*]]: memref<?x8xf32>, %[[T:.*]]: index, %[[V:.*]]: f32)
// CHECK-NOT:     memref.alloc
// CHECK:         scf.forall (%[[I:.*]]) in (%[[T]]) {
// CHECK:           memref.store %[[V]], %[[DEST]][%[[I]], %{{.*}}] : memref<?x8xf32>
// CHECK-NOT:     bufferization.to_tensor
// CHECK-NOT:     bufferization.materialize_in_destination
// CHECK:         return
func.func @kernel_result(%dest: memref<?x8xf32>, %t: index, %v: f32) {
  %c0 = arith.constant 0 : index
  %out = memref.alloc(%t) : memref<?x8xf32>
  scf.forall (%i) in (%t) {
    memref.store %v, %out[%i, %c0] : memref<?x8xf32>
  }
  %r = bufferization.to_tensor %out restrict writable : memref<?x8xf32> to tensor<?x8xf32>
  bufferization.materialize_in_destination %r in restrict writable %dest
      : (tensor<?x8xf32>, memref<?x8xf32>) -> ()
  return
}

// -----

// A destination defined after the allocation (as an optional output's is,
// under its NULL check) cannot take its place.

// CHECK-LABEL: func.func @dest_after_alloc
// CHECK:         %[[OUT:.*]] = memref.alloc
// CHECK:         %[[R:.*]] = bufferization.to_tensor %[[OUT]]
// CHECK:         bufferization.materialize_in_destination %[[R]]
func.func @dest_after_alloc(%t: index, %v: f32, %given: i1) {
  %c0 = arith.constant 0 : index
  %out = memref.alloc(%t) : memref<?x8xf32>
  memref.store %v, %out[%c0, %c0] : memref<?x8xf32>
  %r = bufferization.to_tensor %out restrict writable : memref<?x8xf32> to tensor<?x8xf32>
  scf.if %given {
    %dest = memref.alloc(%t) : memref<?x8xf32>
    bufferization.materialize_in_destination %r in restrict writable %dest
        : (tensor<?x8xf32>, memref<?x8xf32>) -> ()
  }
  return
}

// -----

// The tensor has a second use, which may write into it in place.

// CHECK-LABEL: func.func @tensor_used_twice
// CHECK:         %[[OUT:.*]] = memref.alloc
// CHECK:         %[[R:.*]] = bufferization.to_tensor %[[OUT]]
// CHECK:         bufferization.materialize_in_destination %[[R]]
func.func @tensor_used_twice(%dest: memref<?x8xf32>, %t: index, %v: f32) -> tensor<?x8xf32> {
  %out = memref.alloc(%t) : memref<?x8xf32>
  %r = bufferization.to_tensor %out restrict writable : memref<?x8xf32> to tensor<?x8xf32>
  bufferization.materialize_in_destination %r in restrict writable %dest
      : (tensor<?x8xf32>, memref<?x8xf32>) -> ()
  return %r : tensor<?x8xf32>
}

// -----

// The buffer is written after it became a tensor.

// CHECK-LABEL: func.func @written_after_to_tensor
// CHECK:         %[[OUT:.*]] = memref.alloc
// CHECK:         %[[R:.*]] = bufferization.to_tensor %[[OUT]]
// CHECK:         bufferization.materialize_in_destination %[[R]]
func.func @written_after_to_tensor(%dest: memref<?x8xf32>, %t: index, %v: f32) {
  %c0 = arith.constant 0 : index
  %out = memref.alloc(%t) : memref<?x8xf32>
  %r = bufferization.to_tensor %out restrict writable : memref<?x8xf32> to tensor<?x8xf32>
  memref.store %v, %out[%c0, %c0] : memref<?x8xf32>
  bufferization.materialize_in_destination %r in restrict writable %dest
      : (tensor<?x8xf32>, memref<?x8xf32>) -> ()
  return
}

// -----

// The destination has another use (it is read here).

// CHECK-LABEL: func.func @dest_read_elsewhere
// CHECK:         %[[OUT:.*]] = memref.alloc
// CHECK:         %[[R:.*]] = bufferization.to_tensor %[[OUT]]
// CHECK:         bufferization.materialize_in_destination %[[R]]
func.func @dest_read_elsewhere(%dest: memref<?x8xf32>, %t: index) -> f32 {
  %c0 = arith.constant 0 : index
  %old = memref.load %dest[%c0, %c0] : memref<?x8xf32>
  %out = memref.alloc(%t) : memref<?x8xf32>
  %r = bufferization.to_tensor %out restrict writable : memref<?x8xf32> to tensor<?x8xf32>
  bufferization.materialize_in_destination %r in restrict writable %dest
      : (tensor<?x8xf32>, memref<?x8xf32>) -> ()
  return %old : f32
}

// -----

// Without restrict, another tensor may alias the destination.

// CHECK-LABEL: func.func @not_restrict
// CHECK:         %[[OUT:.*]] = memref.alloc
// CHECK:         %[[R:.*]] = bufferization.to_tensor %[[OUT]]
// CHECK:         bufferization.materialize_in_destination %[[R]]
func.func @not_restrict(%dest: memref<?x8xf32>, %t: index) {
  %out = memref.alloc(%t) : memref<?x8xf32>
  %r = bufferization.to_tensor %out restrict writable : memref<?x8xf32> to tensor<?x8xf32>
  bufferization.materialize_in_destination %r in writable %dest
      : (tensor<?x8xf32>, memref<?x8xf32>) -> ()
  return
}

// -----

// A destination of another layout is not the allocation's type.

// CHECK-LABEL: func.func @strided_dest
// CHECK:         %[[OUT:.*]] = memref.alloc
// CHECK:         %[[R:.*]] = bufferization.to_tensor %[[OUT]]
// CHECK:         bufferization.materialize_in_destination %[[R]]
func.func @strided_dest(%dest: memref<?x8xf32, strided<[16, 1]>>, %t: index) {
  %out = memref.alloc(%t) : memref<?x8xf32>
  %r = bufferization.to_tensor %out restrict writable : memref<?x8xf32> to tensor<?x8xf32>
  bufferization.materialize_in_destination %r in restrict writable %dest
      : (tensor<?x8xf32>, memref<?x8xf32, strided<[16, 1]>>) -> ()
  return
}
