//===- moe-fuzz-spec.cpp - libFuzzer target of the layer-spec front end ---===//
//
// One input is a YAML or JSON layer spec. It is parsed and validated as
// moe-compile does (with moe-lower-to-cpu's tile options); a spec that passes
// must build a layer module that verifies. Diagnostics are dropped: only a
// crash, a sanitizer report, a leak, a hang, or a valid spec whose module does
// not verify (an abort) is a finding.
//
//===----------------------------------------------------------------------===//

#include "moe/Frontend/LayerBuilder.h"
#include "moe/Frontend/LayerSpec.h"
#include "moe/Pipelines/Pipelines.h"
#include "moe/Pipelines/TileOptions.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <cstdlib>

using namespace mlir;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::SourceMgr sourceMgr;
  sourceMgr.setDiagHandler([](const llvm::SMDiagnostic &, void *) {});
  unsigned bufferId = sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          StringRef(reinterpret_cast<const char *>(data), size), "fuzz.yaml"),
      llvm::SMLoc());
  FailureOr<moe::LayerSpec> spec =
      moe::parseLayerSpec(sourceMgr, bufferId, &moe::getSpecTileOptions());
  if (failed(spec))
    return 0;

  // A context per input: types and attributes of the last input's sizes
  // would otherwise stay interned for the whole run.
  static const DialectRegistry *registry = [] {
    auto *registry = new DialectRegistry();
    moe::registerLayerBuilderDialects(*registry);
    return registry;
  }();
  MLIRContext context(*registry, MLIRContext::Threading::DISABLED);
  ScopedDiagnosticHandler silence(&context,
                                  [](Diagnostic &) { return success(); });
  OwningOpRef<ModuleOp> module = moe::buildLayerModule(context, *spec);
  if (!module || failed(verify(*module))) {
    // moe-compile reports this as an internal error: a finding.
    llvm::errs() << "moe-fuzz-spec: a valid spec built a module that does "
                    "not verify\n";
    std::abort();
  }
  return 0;
}
