// convert-moe-to-gpu{tensor-cores=...}: the GEMMs of bf16 expert weights as
// warp tiles (1-d work items, 32 per tile of 16 rows x four 8-column MMA
// tiles) that loop over the distinct experts of their rows (scf.while; for
// up to four row tiles, one warp per distinct expert instead) and
// over 16-deep steps (scf.for): per step the A fragments once, four B
// fragments, and per activation term (lo, mid, hi) one moe.warp_mma per
// MMA tile; then a relayout of the registers to [rows, cols]. f32 weights
// keep the one-thread-per-output GEMMs.
// RUN: moe-opt %s -split-input-file --convert-moe-to-gpu=tensor-cores=mma | FileCheck %s --check-prefix=MMA
// RUN: moe-opt %s -split-input-file "--convert-moe-to-gpu=tensor-cores=mma mma-precision=bf16" | FileCheck %s --check-prefix=BF16
// RUN: moe-opt %s -split-input-file --convert-moe-to-gpu=tensor-cores=emulate | FileCheck %s --check-prefix=EMULATE
// RUN: moe-opt %s -split-input-file --convert-moe-to-gpu | FileCheck %s --check-prefix=NONE
// RUN: not moe-opt %s --convert-moe-to-gpu=tensor-cores=wmma 2>&1 | FileCheck %s --check-prefix=BAD-MODE
// RUN: not moe-opt %s "--convert-moe-to-gpu=tensor-cores=mma mma-precision=fp8" 2>&1 | FileCheck %s --check-prefix=BAD-PRECISION
// BAD-MODE: error: tensor-cores must be none, mma or emulate, got 'wmma'
// BAD-PRECISION: error: mma-precision must be f32 or bf16, got 'fp8'

// D = 24 (one full and one partial 16-deep step), F = 20 (one warp tile of
// 32 columns, its last MMA tile empty, the one before partial).
// MMA-LABEL: func.func @bf16_swiglu
// MMA:         %[[TILES:.*]] = arith.divui %{{.*}}, %c16 : index
// Up to four row tiles (decode), a warp per distinct expert of a tile.
// MMA:         %[[FEW:.*]] = arith.cmpi ule, %[[TILES]], %c4 : index
// MMA:         %[[GROUPS:.*]] = arith.select %[[FEW]], %c16, %c1 : index
// MMA:         %[[WARPS:.*]] = arith.muli %[[TILES]], %[[GROUPS]] : index
// MMA:         %[[ITEMS:.*]] = arith.muli %[[WARPS]], %c32 : index
// MMA:         linalg.generic {{.*}}iterator_types = ["parallel"]
// MMA:           %[[ID:.*]] = linalg.index 0 : index
// MMA:           %[[LANE:.*]] = arith.remui %[[ID]], %c32 : index
// MMA:           scf.while
// MMA:             arith.cmpi ult, %{{.*}}, %c5 : index
// MMA:             scf.for %{{.*}} = %c0 to %c2 step %c1 iter_args
// f32 activations as hi, mid and lo terms, truncated by a mask.
// MMA:               arith.andi %{{.*}}, %c-65536_i32 : i32
// MMA:               arith.truncf %{{.*}} : f32 to bf16
// The lo term into the four MMA tiles (one A, four Bs), then mid, then hi,
// each accumulating into its tile's registers.
// MMA:               %[[L0:[^,]*]], %{{[^,]*}}, %{{[^,]*}}, %[[L3:[^,]*]] = moe.warp_mma a(%[[ALO:[^)]*]]) b(%[[B0:[^,]*]], %[[B1:[^)]*]]) c(
// MMA-NEXT:          moe.warp_mma a(%[[ALO]]) b(%[[B2:[^,]*]], %[[B3:[^)]*]]) c(
// MMA-NEXT:          moe.warp_mma a(%[[ALO]]) b(
// MMA-NEXT:          moe.warp_mma a(%[[ALO]]) b(
// MMA-NEXT:          %[[M0:[^,]*]], %{{[^,]*}}, %{{[^,]*}}, %[[M3:[^,]*]] = moe.warp_mma a(%[[AMID:[^)]*]]) b(%[[B0]], %[[B1]]) c(%[[L0]], %{{[^,]*}}, %{{[^,]*}}, %[[L3]])
// MMA-NEXT:          moe.warp_mma a(%[[AMID]]) b(%[[B2]], %[[B3]])
// MMA-NEXT:          moe.warp_mma a(%[[AMID]]) b(
// MMA-NEXT:          moe.warp_mma a(%[[AMID]]) b(
// MMA-NEXT:          %[[H0:[^,]*]], %{{[^,]*}}, %{{[^,]*}}, %[[H3:[^,]*]] = moe.warp_mma a(%[[AHI:[^)]*]]) b(%[[B0]], %[[B1]]) c(%[[M0]], %{{[^,]*}}, %{{[^,]*}}, %[[M3]])
// MMA-NEXT:          moe.warp_mma a(%[[AHI]]) b(%[[B2]], %[[B3]])
// MMA-NEXT:          moe.warp_mma a(%[[AHI]]) b(
// MMA-NEXT:          moe.warp_mma a(%[[AHI]]) b(
// MMA-NEXT:          scf.yield %[[H0]], %{{[^,]*}}, %{{[^,]*}}, %[[H3]],
// The w3 tiles, then SwiGLU over [rows, 20] reading both tiles' registers
// where they are (one of 16 per element: a switch), no relayout pass.
// MMA:         linalg.generic {{.*}}iterator_types = ["parallel"]} outs({{.*}} : tensor<?xf32>, {{.*}})
// MMA-COUNT-12:  moe.warp_mma
// MMA:         linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} ins(%{{.*}} : tensor<?xindex>) outs(%{{.*}} : tensor<?x20xf32>)
// MMA:           scf.index_switch
// MMA:           scf.index_switch
// The w2 GEMM, then init + its tiles.
// MMA-COUNT-12: moe.warp_mma
// MMA:         linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<?x24xf32>, tensor<?xindex>) outs(%{{.*}} : tensor<?x24xf32>)
// MMA:           scf.index_switch
// MMA-NOT:     moe.warp_mma
// MMA:         return
// BF16-LABEL: func.func @bf16_swiglu
// BF16-NOT:    arith.andi %{{.*}}, %c-65536_i32
// BF16-COUNT-12: moe.warp_mma
// BF16-NOT:    moe.warp_mma
// BF16:        return
// EMULATE-LABEL: func.func @bf16_swiglu
// EMULATE:       scf.while
// EMULATE:       scf.for %{{.*}} = %c0 to %c16 step %c1
// EMULATE-NOT:   moe.warp_mma
// NONE-LABEL: func.func @bf16_swiglu
// NONE-NOT:    scf.while
// NONE-NOT:    moe.warp_mma
func.func @bf16_swiglu(%rows: tensor<?x24xf32>, %offsets: tensor<6xi32>,
    %w1: tensor<5x20x24xbf16>, %w2: tensor<5x24x20xbf16>,
    %w3: tensor<5x20x24xbf16>, %init: tensor<?x24xf32>) -> tensor<?x24xf32> {
  %y = moe.expert_ffn swiglu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x24xf32>, tensor<6xi32>, tensor<5x20x24xbf16>, tensor<5x24x20xbf16>)
      up(%w3 : tensor<5x20x24xbf16>)
      outs(%init : tensor<?x24xf32>) -> tensor<?x24xf32>
  return %y : tensor<?x24xf32>
}

// -----

// MMA-LABEL: func.func @f32_gelu
// MMA-NOT:     scf.while
// MMA-NOT:     moe.warp_mma
// MMA:         return
func.func @f32_gelu(%rows: tensor<?x16xf32>, %offsets: tensor<5xi32>,
    %w1: tensor<4x32x16xf32>, %w2: tensor<4x16x32xf32>,
    %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %y = moe.expert_ffn gelu
      ins(%rows, %offsets, %w1, %w2 : tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>)
      outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Dense bf16 GEMMs of 8+ outputs: one expert owning every row.
// MMA-LABEL: func.func @bf16_router
// MMA:         %[[EXPERT:.*]] = linalg.fill ins(%c0 : index) outs(%{{.*}} : tensor<?xindex>)
// MMA:         %[[STACK:.*]] = tensor.expand_shape %{{.*}} {{\[\[}}0, 1], [2]] output_shape [1, 16, 24] : tensor<16x24xbf16> into tensor<1x16x24xbf16>
// MMA:         moe.warp_mma
// init + the tiles' sums, read where they are.
// MMA:         %[[OUT:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} outs(%{{.*}} : tensor<?x16xf32>)
// MMA:           scf.index_switch
// MMA:           arith.addf
// MMA:         return %[[OUT]]
// NONE-LABEL: func.func @bf16_router
// NONE:         moe.linear
func.func @bf16_router(%x: tensor<?x24xf32>, %gate: tensor<16x24xbf16>, %init: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %logits = moe.linear ins(%x, %gate : tensor<?x24xf32>, tensor<16x24xbf16>) outs(%init : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %logits : tensor<?x16xf32>
}

// -----

// Fewer than 8 outputs, or f32 weights: the reference lowering's GEMM.
// MMA-LABEL: func.func @narrow_and_f32
// MMA:         moe.linear ins(%{{.*}}, %{{.*}} : tensor<?x24xf32>, tensor<4x24xbf16>)
// MMA:         moe.linear ins(%{{.*}}, %{{.*}} : tensor<?x24xf32>, tensor<16x24xf32>)
// MMA-NOT:     moe.warp_mma
func.func @narrow_and_f32(%x: tensor<?x24xf32>, %g4: tensor<4x24xbf16>, %g16: tensor<16x24xf32>, %i4: tensor<?x4xf32>, %i16: tensor<?x16xf32>) -> (tensor<?x4xf32>, tensor<?x16xf32>) {
  %a = moe.linear ins(%x, %g4 : tensor<?x24xf32>, tensor<4x24xbf16>) outs(%i4 : tensor<?x4xf32>) -> tensor<?x4xf32>
  %b = moe.linear ins(%x, %g16 : tensor<?x24xf32>, tensor<16x24xf32>) outs(%i16 : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %a, %b : tensor<?x4xf32>, tensor<?x16xf32>
}

// -----

// A gated bf16 shared expert: its MLP as a one-expert moe.expert_ffn over
// all rows (three GEMMs on the tiles), its one-output gate a moe.linear left
// to the reference lowering, then init + σ(gate · x) · mlp.
// MMA-LABEL: func.func @bf16_shared_expert
// MMA-COUNT-36: moe.warp_mma
// MMA-NOT:     moe.warp_mma
// MMA:         %[[GATE:.*]] = moe.linear ins(%{{.*}}, %{{.*}} : tensor<?x24xf32>, tensor<1x24xbf16>)
// MMA:         %[[OUT:.*]] = linalg.generic {{.*}} ins(%{{.*}}, %[[GATE]] : tensor<?x24xf32>, tensor<?x1xf32>) outs(%{{.*}} : tensor<?x24xf32>)
// MMA:           arith.negf
// MMA:           math.exp
// MMA:         return %[[OUT]]
// NONE-LABEL: func.func @bf16_shared_expert
// NONE:         moe.shared_expert
func.func @bf16_shared_expert(%x: tensor<?x24xf32>, %w1: tensor<40x24xbf16>, %w2: tensor<24x40xbf16>, %w3: tensor<40x24xbf16>, %g: tensor<1x24xbf16>, %init: tensor<?x24xf32>) -> tensor<?x24xf32> {
  %y = moe.shared_expert swiglu ins(%x, %w1, %w2 : tensor<?x24xf32>, tensor<40x24xbf16>, tensor<24x40xbf16>) up(%w3 : tensor<40x24xbf16>) gate(%g : tensor<1x24xbf16>) outs(%init : tensor<?x24xf32>) -> tensor<?x24xf32>
  return %y : tensor<?x24xf32>
}
