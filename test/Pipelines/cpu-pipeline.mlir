// The CPU pipelines and each of their options.
// RUN: moe-opt %s --moe-lower-to-loops | FileCheck %s --check-prefix=LOOPS
// RUN: moe-opt %s --moe-lower-to-cpu | FileCheck %s --check-prefix=CPU
// RUN: moe-opt %s --moe-lower-to-cpu="runtime-allocator" | FileCheck %s --check-prefix=RUNTIME-ALLOC
// RUN: moe-opt %s --moe-lower-to-cpu="emit-c-interface" | FileCheck %s --check-prefix=CIFACE
// RUN: not moe-opt %s --moe-lower-to-cpu="no-such-option" 2>&1 | FileCheck %s --check-prefix=BAD-OPTION

// LOOPS-LABEL: func.func @top2(
// LOOPS-SAME: memref<?x8xf32>
// LOOPS-NOT: moe.
// LOOPS: scf.for
// LOOPS: return %{{.*}}, %{{.*}} : memref<?x2xf32>, memref<?x2xi32>

// CPU-LABEL: llvm.func @top2(
// CPU-NOT: moe.
// CPU: llvm.call @malloc
// CPU-NOT: builtin.unrealized_conversion_cast

// RUNTIME-ALLOC-LABEL: llvm.func @top2(
// RUNTIME-ALLOC-NOT: @malloc
// RUNTIME-ALLOC: llvm.call @_mlir_memref_to_llvm_alloc

// CIFACE: llvm.func @_mlir_ciface_top2(

// BAD-OPTION: no-such-option
func.func @top2(%x: tensor<?x8xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x8xf32>
  %v0 = tensor.empty(%t) : tensor<?x2xf32>
  %i0 = tensor.empty(%t) : tensor<?x2xi32>
  %v, %i = moe.topk ins(%x : tensor<?x8xf32>) outs(%v0, %i0 : tensor<?x2xf32>, tensor<?x2xi32>)
      -> tensor<?x2xf32>, tensor<?x2xi32>
  return %v, %i : tensor<?x2xf32>, tensor<?x2xi32>
}
