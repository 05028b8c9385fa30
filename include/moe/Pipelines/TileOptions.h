//===- TileOptions.h - the CPU pipeline's tile options by name --*- C++ -*-===//

#ifndef MOE_PIPELINES_TILEOPTIONS_H
#define MOE_PIPELINES_TILEOPTIONS_H

#include "moe/Frontend/LayerSpec.h"
#include "moe/Pipelines/Pipelines.h"

#include "mlir/Support/LLVM.h"
#include "llvm/ADT/SmallVector.h"

#include <string>

namespace mlir::moe {

/// An option of CPUPipelineOptions that chooses tile sizes or kernels.
struct CPUTileOption {
  std::string name;
  /// Whether the option takes an integer (a tile size, 0 for the target's
  /// default); the others take a string.
  bool integer = false;
};

/// The tile options of CPUPipelineOptions, by name: every option but those a
/// driver sets itself (emit-c-interface, runtime-allocator, reference). Read
/// from the options object, so options added later are listed too.
SmallVector<CPUTileOption> getCPUTileOptions();

/// Sets the option `name` of `options` to `value`, as `name=value` in a
/// moe-lower-to-cpu option string would. Returns what is wrong (an unknown
/// name, a value that the option string cannot hold or that the option's
/// parser rejects, which llvm::cl also reports on stderr), or "" when it is
/// set. Drivers check names and value types first.
std::string setCPUPipelineOption(CPUPipelineOptions &options, StringRef name,
                                 StringRef value);

/// The tile options a layer spec may set (its `tiles:` mapping): those of
/// moe-lower-to-cpu, each value checked as in `--tiles`. Drivers and the spec
/// fuzzer pass it to parseLayerSpec so a spec is checked one way everywhere.
const TileOptionTable &getSpecTileOptions();

} // namespace mlir::moe

#endif // MOE_PIPELINES_TILEOPTIONS_H
