// Bad input to the CUDA target's passes: located errors, no crash.
// RUN: moe-opt %s -split-input-file -moe-lower-gpu-launches -verify-diagnostics
// RUN: not moe-opt %s -split-input-file --moe-create-c-entry-points=target=rocm 2>&1 | FileCheck %s --check-prefix=ENTRY-TARGET
// RUN: not moe-opt %s -split-input-file --moe-allocate-scratch-up-front=target=rocm 2>&1 | FileCheck %s --check-prefix=SCRATCH-TARGET
// ENTRY-TARGET: error: target must be cpu or cuda, got 'rocm'
// SCRATCH-TARGET: error: target must be cpu or cuda, got 'rocm'

// A launch whose kernels were never compiled into a gpu.binary.
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k() kernel {
      gpu.return
    }
  }
  func.func @host() {
    %c1 = arith.constant 1 : index
    // expected-error @below {{launches a kernel of a module that was not compiled to a gpu.binary}}
    gpu.launch_func @kernels::@k blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1)
    return
  }
}
