// moe-opt registers the dialect's passes.
// RUN: moe-opt --help | FileCheck %s

// CHECK: --moe-strip-router-noise
// CHECK-SAME: Turn noisy top-k gating into its deterministic inference form
// CHECK: --moe-tile-token-ops
// CHECK-SAME: Tile routing chains into one pass over token tiles
// CHECK-NEXT: --max-fused-weight-bytes=<long>
// CHECK-NEXT: --routing-only
// CHECK-NEXT: --token-tile=<long>
