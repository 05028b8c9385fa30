// RUN: moe-opt %s -split-input-file -moe-merge-kernel-modules -verify-diagnostics | FileCheck %s

// Two outlined modules become one; kernels take their old module's name and
// the launches follow.
// CHECK-LABEL: gpu.module @moe_kernels
// CHECK:         gpu.func @layer_kernel() kernel
// CHECK:         gpu.func @layer_kernel_0() kernel
// CHECK-NOT:   gpu.module
// CHECK:       func.func @layer
// CHECK:         gpu.launch_func  @moe_kernels::@layer_kernel blocks
// CHECK:         gpu.launch_func  @moe_kernels::@layer_kernel_0 blocks
module attributes {gpu.container_module} {
  gpu.module @layer_kernel {
    gpu.func @layer_kernel() kernel {
      gpu.return
    }
  }
  gpu.module @layer_kernel_0 {
    gpu.func @layer_kernel() kernel {
      gpu.return
    }
  }
  func.func @layer() {
    %c1 = arith.constant 1 : index
    gpu.launch_func @layer_kernel::@layer_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1)
    gpu.launch_func @layer_kernel_0::@layer_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1)
    return
  }
}

// -----

// Modules with a target are past the point of merging.
module attributes {gpu.container_module} {
  // expected-error @below {{has a target or offloading handler already: merge kernel modules before attaching targets}}
  gpu.module @compiled [#nvvm.target<chip = "sm_90">] {
    gpu.func @k() kernel {
      gpu.return
    }
  }
}
