//===- CPUBackend.h - LLVM-dialect modules to CPU code ----------*- C++ -*-===//

#ifndef MOE_TARGET_CPU_CPUBACKEND_H
#define MOE_TARGET_CPU_CPUBACKEND_H

#include "mlir/IR/BuiltinOps.h"

#include "llvm/IR/Module.h"
#include "llvm/Target/TargetMachine.h"

#include <memory>
#include <string>

namespace mlir::moe {

struct CPUTargetOptions {
  /// Target triple; empty for the host.
  std::string triple;
  /// CPU name ("native" or empty for the host CPU, e.g. "skylake-avx512").
  std::string cpu;
  /// Comma-separated feature list ("+avx2,-avx512f"); added to the CPU's.
  std::string features;
  /// 0..3, as -O0..-O3.
  unsigned optLevel = 3;
};

/// A TargetMachine for `options`, or an error naming what was not found.
llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
createCPUTargetMachine(const CPUTargetOptions &options);

/// Makes every function and global except the C entry points internal, so
/// the object exports only the entry points (`*_forward`, `*_forward_packed`,
/// `*_pack_weights`, `*_route`) and LLVM can inline the rest.
void internalizeAllButEntryPoints(ModuleOp module);

/// Translates an LLVM-dialect module to LLVM IR for `machine` (triple and
/// data layout set) and runs the LLVM optimisation pipeline of its level.
llvm::Expected<std::unique_ptr<llvm::Module>>
translateAndOptimize(ModuleOp module, llvm::LLVMContext &context,
                     llvm::TargetMachine &machine, unsigned optLevel);

/// Instruments every function defined in `module` with AddressSanitizer.
/// translateAndOptimize does it when this compiler is an ASan build
/// (MOE_SANITIZE); the result needs the ASan runtime in the process.
void instrumentWithAddressSanitizer(llvm::Module &module,
                                    llvm::TargetMachine &machine);

/// Writes `module` as an object file or assembly text.
llvm::Error emitMachineCode(llvm::Module &module, llvm::TargetMachine &machine,
                            llvm::CodeGenFileType type, llvm::raw_pwrite_stream &os);

/// Links `objectPath` and the static runtime into the shared library
/// `outputPath` with the system C compiler driver (`linker`).
llvm::Error linkSharedLibrary(llvm::StringRef linker, llvm::StringRef objectPath,
                              llvm::StringRef runtimeArchive,
                              llvm::StringRef outputPath);

} // namespace mlir::moe

#endif // MOE_TARGET_CPU_CPUBACKEND_H
