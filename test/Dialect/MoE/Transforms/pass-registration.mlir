// moe-opt registers the dialect's passes.
// RUN: moe-opt --help | FileCheck %s

// CHECK: --moe-strip-router-noise
// CHECK-SAME: Turn noisy top-k gating into its deterministic inference form
