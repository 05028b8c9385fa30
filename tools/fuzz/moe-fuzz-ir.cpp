//===- moe-fuzz-ir.cpp - libFuzzer target of the moe IR lowering path -----===//
//
// One input is an MLIR module in text form. It is parsed and verified with
// every dialect moe-opt knows; a module that verifies, holds moe IR only
// (ops of the moe, func, arith and tensor dialects) and has small shapes then
// goes through what moe-compile does to it: the route variant, the C entry
// points, moe-lower-to-cpu (the fast pipeline, or the reference one for every
// other input) and the translation to LLVM IR. Diagnostics are dropped: a
// module the passes refuse with an error is fine; a crash, a sanitizer
// report, a leak or a hang is a finding.
//
//===----------------------------------------------------------------------===//

#include "moe/ABI/Passes.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"
#include "moe/InitAllDialects.h"
#include "moe/Pipelines/Pipelines.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"

#include <cstdint>

using namespace mlir;

/// The most elements of any shaped type a module may have to be lowered. The
/// lowering itself allocates nothing per element, but constants it folds and
/// loops it unrolls grow with the shapes: a valid layer with gigabytes of
/// weights would make the fuzzer run out of memory or time rather than find
/// anything. Vectors are unrolled element by element, so their cap is lower.
static constexpr int64_t kMaxTensorElements = int64_t(1) << 20;
static constexpr int64_t kMaxVectorElements = int64_t(1) << 12;

/// Whether the lowering should run on `module`: moe IR only, small shapes.
static bool isBoundedMoEIR(ModuleOp module) {
  static const llvm::StringSet<> dialects = {"builtin", "func", "arith",
                                             "tensor", "moe"};
  auto bounded = [](Type type) {
    auto shaped = dyn_cast<ShapedType>(type);
    if (!shaped || !shaped.hasRank())
      return true;
    int64_t limit =
        isa<VectorType>(shaped) ? kMaxVectorElements : kMaxTensorElements;
    int64_t elements = 1;
    for (int64_t dim : shaped.getShape()) {
      if (ShapedType::isDynamic(dim))
        continue;
      if (dim > limit || elements > limit / std::max<int64_t>(dim, 1))
        return false;
      elements *= std::max<int64_t>(dim, 1);
    }
    return true;
  };
  WalkResult result = module.walk([&](Operation *op) {
    if (!dialects.contains(op->getName().getDialectNamespace()))
      return WalkResult::interrupt();
    for (Type type : op->getResultTypes())
      if (!bounded(type))
        return WalkResult::interrupt();
    for (Region &region : op->getRegions())
      for (Block &block : region)
        for (Type type : block.getArgumentTypes())
          if (!bounded(type))
            return WalkResult::interrupt();
    // Function signatures and attributes that carry types (func.func's
    // function_type) hold shapes no value has yet.
    for (NamedAttribute attr : op->getAttrs()) {
      bool ok = true;
      attr.getValue().walk([&](Type type) { ok &= bounded(type); });
      if (!ok)
        return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return !result.wasInterrupted();
}

static const DialectRegistry &getRegistry() {
  static const DialectRegistry *registry = [] {
    auto *registry = new DialectRegistry();
    registerAllDialects(*registry);
    registerAllExtensions(*registry);
    moe::registerAllDialects(*registry);
    registerAllToLLVMIRTranslations(*registry);
    return registry;
  }();
  return *registry;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // A context per input: nothing interned by one input outlives it.
  MLIRContext context(getRegistry(), MLIRContext::Threading::DISABLED);
  ScopedDiagnosticHandler silence(&context,
                                  [](Diagnostic &) { return success(); });
  // The parser verifies what it parsed.
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(
      StringRef(reinterpret_cast<const char *>(data), size),
      ParserConfig(&context), "fuzz.mlir");
  if (!module || !isBoundedMoEIR(*module))
    return 0;

  moe::CPUPipelineOptions options;
  options.reference = size % 2;
  options.vectorWidth = 8;
  options.runtimeAllocator = true;
  PassManager pm(&context);
  pm.addPass(moe::createMoEAddRouteVariant());
  pm.addPass(moe::createMoECreateCEntryPoints());
  moe::buildMoELowerToCPUPipeline(pm, options);
  if (failed(pm.run(*module)))
    return 0;
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*module, llvmContext);
  (void)llvmModule;
  return 0;
}
