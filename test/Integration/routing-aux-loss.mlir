// moe.aux_loss (load_balance, importance, z_loss) lowered to the CPU and run.
// Expected values: NumPy (float64) from the semantics, printed to 6 digits.
// RUN: moe-opt %s --moe-lower-to-cpu \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:     -shared-libs=%mlir_runner_utils,%mlir_c_runner_utils,%moe_runtime \
// RUN: | FileCheck %s

func.func private @printMemrefF32(tensor<*xf32>)
func.func private @printMemrefI32(tensor<*xi32>)

// Switch load balance: E · Σ f_i P_i with softmax probabilities. Dynamic tokens.
// CHECK: rank = 0 offset = 0 sizes = []
// CHECK-NEXT: [1.35753]
func.func @load_balance_softmax(%logits: tensor<?x4xf32>, %ids: tensor<?x2xi32>) {
  %loss = moe.aux_loss load_balance %logits ids(%ids : tensor<?x2xi32>) : tensor<?x4xf32> -> tensor<f32>
  %loss_u = tensor.cast %loss : tensor<f32> to tensor<*xf32>
  call @printMemrefF32(%loss_u) : (tensor<*xf32>) -> ()
  return
}

// Sigmoid scores normalised per token, coefficient 0.01.
// CHECK: rank = 0 offset = 0 sizes = []
// CHECK-NEXT: [0.0115387]
func.func @load_balance_sigmoid(%logits: tensor<3x4xf32>, %ids: tensor<3x2xi32>) {
  %loss = moe.aux_loss load_balance %logits ids(%ids : tensor<3x2xi32>) {score = #moe<score sigmoid>, coefficient = 1.000000e-02 : f64} : tensor<3x4xf32> -> tensor<f32>
  %loss_u = tensor.cast %loss : tensor<f32> to tensor<*xf32>
  call @printMemrefF32(%loss_u) : (tensor<*xf32>) -> ()
  return
}

// Uniform router and assignments: the minimum, coefficient · 1.
// CHECK: rank = 0 offset = 0 sizes = []
// CHECK-NEXT: [0.5]
func.func @load_balance_uniform(%logits: tensor<2x2xf32>, %ids: tensor<2x1xi32>) {
  %loss = moe.aux_loss load_balance %logits ids(%ids : tensor<2x1xi32>) {coefficient = 5.000000e-01 : f64} : tensor<2x2xf32> -> tensor<f32>
  %loss_u = tensor.cast %loss : tensor<f32> to tensor<*xf32>
  call @printMemrefF32(%loss_u) : (tensor<*xf32>) -> ()
  return
}

// Importance CV²: population variance over squared mean (+1e-10).
// CHECK: rank = 0 offset = 0 sizes = []
// CHECK-NEXT: [0.38444{{[0-9]*}}]
func.func @importance(%logits: tensor<3x4xf32>, %ids: tensor<3x2xi32>, %w: tensor<3x2xf32>) {
  %loss = moe.aux_loss importance %logits ids(%ids : tensor<3x2xi32>) weights(%w : tensor<3x2xf32>) {coefficient = 5.000000e-01 : f64} : tensor<3x4xf32> -> tensor<f32>
  %loss_u = tensor.cast %loss : tensor<f32> to tensor<*xf32>
  call @printMemrefF32(%loss_u) : (tensor<*xf32>) -> ()
  return
}

// Equal importance for every expert: 0.
// CHECK: rank = 0 offset = 0 sizes = []
// CHECK-NEXT: [{{-?}}0]
func.func @importance_balanced(%logits: tensor<2x2xf32>, %ids: tensor<2x2xi32>, %w: tensor<2x2xf32>) {
  %loss = moe.aux_loss importance %logits ids(%ids : tensor<2x2xi32>) weights(%w : tensor<2x2xf32>) : tensor<2x2xf32> -> tensor<f32>
  %loss_u = tensor.cast %loss : tensor<f32> to tensor<*xf32>
  call @printMemrefF32(%loss_u) : (tensor<*xf32>) -> ()
  return
}

// z-loss: mean over tokens of logsumexp² (max-subtracted). Dynamic tokens.
// CHECK: rank = 0 offset = 0 sizes = []
// CHECK-NEXT: [3358.52]
func.func @z_loss(%logits: tensor<?x3xf32>) {
  %loss = moe.aux_loss z_loss %logits : tensor<?x3xf32> -> tensor<f32>
  %loss_u = tensor.cast %loss : tensor<f32> to tensor<*xf32>
  call @printMemrefF32(%loss_u) : (tensor<*xf32>) -> ()
  return
}

// With coefficient 1e-3.
// CHECK: rank = 0 offset = 0 sizes = []
// CHECK-NEXT: [0.0052195{{[0-9]*}}]
func.func @z_loss_coefficient(%logits: tensor<2x2xf32>) {
  %loss = moe.aux_loss z_loss %logits {coefficient = 1.000000e-03 : f64} : tensor<2x2xf32> -> tensor<f32>
  %loss_u = tensor.cast %loss : tensor<f32> to tensor<*xf32>
  call @printMemrefF32(%loss_u) : (tensor<*xf32>) -> ()
  return
}

func.func @main() {
  %load_balance_softmax_0 = arith.constant dense<[[1.0, 0.0, -1.0, 0.5], [0.2, 0.2, 0.2, 0.2], [2.0, -1.0, 0.0, 1.0]]> : tensor<3x4xf32>
  %load_balance_softmax_0d = tensor.cast %load_balance_softmax_0 : tensor<3x4xf32> to tensor<?x4xf32>
  %load_balance_softmax_1 = arith.constant dense<[[0, 3], [1, 0], [0, 3]]> : tensor<3x2xi32>
  %load_balance_softmax_1d = tensor.cast %load_balance_softmax_1 : tensor<3x2xi32> to tensor<?x2xi32>
  call @load_balance_softmax(%load_balance_softmax_0d, %load_balance_softmax_1d) : (tensor<?x4xf32>, tensor<?x2xi32>) -> ()
  %load_balance_sigmoid_0 = arith.constant dense<[[1.0, 0.0, -1.0, 0.5], [0.2, 0.2, 0.2, 0.2], [2.0, -1.0, 0.0, 1.0]]> : tensor<3x4xf32>
  %load_balance_sigmoid_1 = arith.constant dense<[[0, 3], [1, 0], [0, 3]]> : tensor<3x2xi32>
  call @load_balance_sigmoid(%load_balance_sigmoid_0, %load_balance_sigmoid_1) : (tensor<3x4xf32>, tensor<3x2xi32>) -> ()
  %load_balance_uniform_0 = arith.constant dense<[[0.0, 0.0], [0.0, 0.0]]> : tensor<2x2xf32>
  %load_balance_uniform_1 = arith.constant dense<[[0], [1]]> : tensor<2x1xi32>
  call @load_balance_uniform(%load_balance_uniform_0, %load_balance_uniform_1) : (tensor<2x2xf32>, tensor<2x1xi32>) -> ()
  %importance_0 = arith.constant dense<[[1.0, 0.0, -1.0, 0.5], [0.2, 0.2, 0.2, 0.2], [2.0, -1.0, 0.0, 1.0]]> : tensor<3x4xf32>
  %importance_1 = arith.constant dense<[[0, 3], [1, 0], [0, 3]]> : tensor<3x2xi32>
  %importance_2 = arith.constant dense<[[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]]> : tensor<3x2xf32>
  call @importance(%importance_0, %importance_1, %importance_2) : (tensor<3x4xf32>, tensor<3x2xi32>, tensor<3x2xf32>) -> ()
  %importance_balanced_0 = arith.constant dense<[[0.0, 0.0], [0.0, 0.0]]> : tensor<2x2xf32>
  %importance_balanced_1 = arith.constant dense<[[0, 1], [1, 0]]> : tensor<2x2xi32>
  %importance_balanced_2 = arith.constant dense<[[0.5, 0.5], [0.5, 0.5]]> : tensor<2x2xf32>
  call @importance_balanced(%importance_balanced_0, %importance_balanced_1, %importance_balanced_2) : (tensor<2x2xf32>, tensor<2x2xi32>, tensor<2x2xf32>) -> ()
  %z_loss_0 = arith.constant dense<[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 100.0, 99.0]]> : tensor<3x3xf32>
  %z_loss_0d = tensor.cast %z_loss_0 : tensor<3x3xf32> to tensor<?x3xf32>
  call @z_loss(%z_loss_0d) : (tensor<?x3xf32>) -> ()
  %z_loss_coefficient_0 = arith.constant dense<[[0.5, -0.5], [3.0, 1.0]]> : tensor<2x2xf32>
  call @z_loss_coefficient(%z_loss_coefficient_0) : (tensor<2x2xf32>) -> ()
  return
}
