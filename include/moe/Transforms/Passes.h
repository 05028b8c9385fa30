//===- Passes.h - passes on the lowered code of moe layers ------*- C++ -*-===//

#ifndef MOE_TRANSFORMS_PASSES_H
#define MOE_TRANSFORMS_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/Pass.h"

namespace mlir::moe {

/// The prefix of the declarations that moe-outline-parallel-loops calls and
/// moe-lower-parallel-launches replaces: `__moe_parallel_launch_<body>`.
inline constexpr llvm::StringLiteral kParallelLaunchPrefix =
    "__moe_parallel_launch_";

/// The runtime entry point that runs `fn(ctx, i)` for every i in [0, n).
inline constexpr llvm::StringLiteral kRuntimeParallelFor =
    "moe_rt_parallel_for";

/// Marks a function that returns a moe_status (i32), so that
/// moe-allocate-scratch-up-front can return MOE_ERROR_OUT_OF_MEMORY from it.
inline constexpr llvm::StringLiteral kReturnsStatusAttr = "moe.returns_status";

#define GEN_PASS_DECL
#include "moe/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "moe/Transforms/Passes.h.inc"

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_PASSES_H
