# lit configuration of the MoE-MLIR test suite.

import os

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%moe_src_root", config.moe_src_root))
config.substitutions.append(("%examples", os.path.join(config.moe_src_root, "examples")))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP"])
llvm_config.use_default_substitutions()

# RUN lines may start with `not` or use split-file: the external shell must
# find LLVM's test tools.
config.environment["PATH"] = os.pathsep.join(
    [config.llvm_tools_dir, config.environment["PATH"]])

tool_dirs = [config.moe_tools_dir, config.llvm_tools_dir]
tools = ["moe-opt", ToolSubst("moe-compile", unresolved="ignore")]
llvm_config.add_tool_substitutions(tools, tool_dirs)

# Integration tests JIT-run lowered code with mlir-runner and MLIR's runner
# utilities (printMemrefF32 & co.).
if config.moe_sanitizer_runtime:
    config.available_features.add("moe-asan")
    # A sanitized libmoe_runtime.so needs the ASan runtime first in the
    # uninstrumented mlir-runner (whose own allocations are not ours to leak).
    runner = os.path.join(config.llvm_tools_dir, "mlir-runner")
    llvm_config.add_tool_substitutions([ToolSubst(
        "mlir-runner",
        command=f"env LD_PRELOAD={config.moe_sanitizer_runtime} "
        f"ASAN_OPTIONS=detect_leaks=0 {runner}")], [config.llvm_tools_dir])
else:
    llvm_config.add_tool_substitutions(["mlir-runner"], [config.llvm_tools_dir])
# A C driver built in a RUN line is not instrumented; a sanitized kernel
# library needs the ASan runtime loaded first, as mlir-runner does.
config.substitutions.append((
    "%preload_sanitizer",
    f"env LD_PRELOAD={config.moe_sanitizer_runtime} ASAN_OPTIONS=detect_leaks=0"
    if config.moe_sanitizer_runtime else ""))
# A C program or library linked in a RUN line against a sanitized runtime
# archive needs the sanitizer runtime too (the shared one, as moe-compile
# links sanitized layer libraries).
config.substitutions.append((
    "%sanitizer_link_flags",
    "-fsanitize=address,undefined -shared-libsan "
    f"-Wl,-rpath,{os.path.dirname(config.moe_sanitizer_runtime)}"
    if config.moe_sanitizer_runtime else ""))
llvm_lib_dir = os.path.join(os.path.dirname(config.llvm_tools_dir), "lib")
config.substitutions.append(
    ("%mlir_runner_utils", os.path.join(llvm_lib_dir, "libmlir_runner_utils.so")))
config.substitutions.append(
    ("%mlir_c_runner_utils", os.path.join(llvm_lib_dir, "libmlir_c_runner_utils.so")))
# mlir-runner writes perf jitdumps unless pointed elsewhere.
config.environment["JITDUMPDIR"] = config.test_exec_root

# test/Examples: the example application of the main build (MOE_BUILD_EXAMPLES
# configures examples/app into the build tree) and the install-and-consume
# test, which needs cmake (and uses ninja when present).
import shutil

config.substitutions.append(("%moe_obj_root", config.moe_obj_root))
# The runtime fast kernels call (thread pool, scratch memory, errors).
config.substitutions.append(
    ("%moe_runtime", os.path.join(config.moe_obj_root, "lib", "libmoe_runtime.so")))
# A host-only stand-in for libcuda.so.1 (test/Runtime/fake_cuda_driver.c):
# the runtime loads it when MOE_CUDA_DRIVER names it.
config.substitutions.append((
    "%fake_cuda_driver",
    os.path.join(config.moe_obj_root, "test", "Runtime", "libfake-cuda.so")))
if os.path.isdir(os.path.join(config.moe_obj_root, "examples", "app")):
    config.available_features.add("moe-examples")
if shutil.which("cmake"):
    config.available_features.add("moe-install-test")

# The CUDA target compiles kernels with ptxas and fatbinary from the CUDA
# toolkit (no GPU needed); without a toolkit those tests are unsupported.
import shutil
cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
if shutil.which("ptxas") or os.path.exists(os.path.join(cuda_home, "bin", "ptxas")):
    config.available_features.add("ptxas")
