// Round-trip of moe.aux_loss, every kind and option: custom form, generic
// form and bytecode print back to the same custom form, and
// print -> parse -> print is a fixed point.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s
// RUN: moe-opt %s -emit-bytecode | moe-opt | FileCheck %s
// RUN: moe-opt %s > %t.once && moe-opt %t.once > %t.twice && diff %t.once %t.twice

// Every loss kind; the score function and the coefficient are attr-dict
// options (softmax and 1.0 by default).
// CHECK-LABEL: func.func @aux_loss
// CHECK-SAME:    (%[[L:.*]]: tensor<?x8xf32>, %[[IDS:.*]]: tensor<?x2xi32>, %[[W:.*]]: tensor<?x2xf32>)
// CHECK:         %[[LB:.*]] = moe.aux_loss load_balance %[[L]] ids(%[[IDS]] : tensor<?x2xi32>) : tensor<?x8xf32> -> tensor<f32>
// CHECK:         %[[LBS:.*]] = moe.aux_loss load_balance %[[L]] ids(%[[IDS]] : tensor<?x2xi32>) {coefficient = 1.000000e-02 : f64, score = #moe<score sigmoid>} : tensor<?x8xf32> -> tensor<f32>
// CHECK:         %[[IMP:.*]] = moe.aux_loss importance %[[L]] ids(%[[IDS]] : tensor<?x2xi32>) weights(%[[W]] : tensor<?x2xf32>) : tensor<?x8xf32> -> tensor<f32>
// CHECK:         %[[Z:.*]] = moe.aux_loss z_loss %[[L]] {coefficient = 1.000000e-03 : f64} : tensor<?x8xf32> -> tensor<f32>
// CHECK:         return %[[LB]], %[[LBS]], %[[IMP]], %[[Z]]
func.func @aux_loss(%logits: tensor<?x8xf32>, %ids: tensor<?x2xi32>,
                    %w: tensor<?x2xf32>)
    -> (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>) {
  %lb = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>)
      : tensor<?x8xf32> -> tensor<f32>
  %lbs = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>)
      {coefficient = 1.0e-02 : f64, score = #moe<score sigmoid>}
      : tensor<?x8xf32> -> tensor<f32>
  %imp = moe.aux_loss importance %logits ids(%ids : tensor<?x2xi32>)
      weights(%w : tensor<?x2xf32>) : tensor<?x8xf32> -> tensor<f32>
  %z = moe.aux_loss z_loss %logits {coefficient = 1.0e-03 : f64}
      : tensor<?x8xf32> -> tensor<f32>
  return %lb, %lbs, %imp, %z : tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>
}

// Static shapes; an explicit default score is elided.
// CHECK-LABEL: func.func @aux_loss_static
// CHECK:         moe.aux_loss z_loss %{{.*}} : tensor<16x8xf32> -> tensor<f32>
// CHECK:         moe.aux_loss importance %{{.*}} ids(%{{.*}} : tensor<16x2xi32>) weights(%{{.*}} : tensor<16x2xf32>) {coefficient = 5.000000e-01 : f64} : tensor<16x8xf32> -> tensor<f32>
func.func @aux_loss_static(%logits: tensor<16x8xf32>, %ids: tensor<16x2xi32>,
                           %w: tensor<16x2xf32>) -> (tensor<f32>, tensor<f32>) {
  %z = moe.aux_loss z_loss %logits {score = #moe<score softmax>}
      : tensor<16x8xf32> -> tensor<f32>
  %imp = moe.aux_loss importance %logits ids(%ids : tensor<16x2xi32>)
      weights(%w : tensor<16x2xf32>) {coefficient = 0.5 : f64}
      : tensor<16x8xf32> -> tensor<f32>
  return %z, %imp : tensor<f32>, tensor<f32>
}
