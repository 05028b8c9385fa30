# MoESanitizers.cmake - instrumented builds: MOE_SANITIZE and MOE_BUILD_FUZZERS.
#
#   -DMOE_SANITIZE=address,undefined   ASan + UBSan on everything this project
#       compiles: the compiler (moe-opt, moe-compile, the MLIRMoE* libraries),
#       the runtime (linked into every generated kernel), the tests' and the
#       example's C++; moe-compile of such a build also instruments the kernels
#       it generates with ASan (lib/Target/CPU/CPUBackend.cpp).
#   -DMOE_BUILD_FUZZERS=ON   the libFuzzer targets of tools/fuzz (clang only);
#       implies MOE_SANITIZE=address,undefined when that is unset, and adds
#       coverage instrumentation (-fsanitize=fuzzer-no-link) to our code.
#
# libMLIR.so and libLLVM.so stay uninstrumented: ASan still sees every access
# our code makes, and checks heap blocks whoever allocated them.
#
# Included by the top-level CMakeLists.txt after HandleLLVMOptions.

set(MOE_SANITIZE "" CACHE STRING
  "Sanitizers to build with, as for -fsanitize= (e.g. address,undefined)")
option(MOE_BUILD_FUZZERS "Build the libFuzzer targets of tools/fuzz (clang)" OFF)

if(MOE_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "MOE_BUILD_FUZZERS needs clang (libFuzzer), not "
                        "${CMAKE_CXX_COMPILER_ID}")
  endif()
  if(NOT MOE_SANITIZE)
    set(MOE_SANITIZE "address,undefined" CACHE STRING
      "Sanitizers to build with, as for -fsanitize= (e.g. address,undefined)"
      FORCE)
  endif()
endif()

# The sanitizer link flags of the executables, libraries and kernels of this
# build; empty for a plain build.
set(MOE_SANITIZE_FLAGS "")
if(MOE_SANITIZE)
  string(REPLACE "," ";" _moe_sanitizers "${MOE_SANITIZE}")
  set(MOE_SANITIZE_FLAGS "-fsanitize=${MOE_SANITIZE}")
  if("undefined" IN_LIST _moe_sanitizers)
    # As LLVM's own UBSan builds: vptr and function checks need the type
    # information of every class and callee, and libMLIR.so's is not
    # instrumented (false reports). Any other report fails the test at once.
    list(APPEND MOE_SANITIZE_FLAGS -fno-sanitize=vptr,function
                                   -fno-sanitize-recover=all)
  endif()
  add_compile_options(${MOE_SANITIZE_FLAGS} -fno-omit-frame-pointer -g1)
  if("address" IN_LIST _moe_sanitizers)
    # LLVM's headers must not poison allocator memory libMLIR.so hands out.
    add_compile_options(
      "SHELL:-include ${PROJECT_SOURCE_DIR}/cmake/MoEAsanUninstrumentedLLVM.h")
  endif()
  # One sanitizer runtime per process, the shared one: Python loads kernels
  # with ctypes (it preloads the runtime) and starts moe-compile, which
  # inherits the preload; a second, static copy in moe-compile would refuse
  # to start. RUNPATH finds the runtime in clang's resource directory.
  execute_process(
    COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libclang_rt.asan-x86_64.so
    OUTPUT_VARIABLE _moe_asan_runtime OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT IS_ABSOLUTE "${_moe_asan_runtime}" OR NOT EXISTS "${_moe_asan_runtime}")
    message(FATAL_ERROR "MOE_SANITIZE: ${CMAKE_CXX_COMPILER} has no shared "
                        "sanitizer runtime (libclang-rt-dev)")
  endif()
  set(MOE_SANITIZER_RUNTIME "${_moe_asan_runtime}" CACHE INTERNAL
    "The shared ASan runtime, to preload into uninstrumented programs")
  get_filename_component(MOE_SANITIZER_RUNTIME_DIR "${_moe_asan_runtime}"
                         DIRECTORY)
  list(APPEND MOE_SANITIZE_FLAGS -shared-libsan
                                 "-Wl,-rpath,${MOE_SANITIZER_RUNTIME_DIR}")
  add_link_options(${MOE_SANITIZE_FLAGS})
  message(STATUS "MoE-MLIR: sanitizers ${MOE_SANITIZE}")
endif()

if(MOE_BUILD_FUZZERS)
  # Coverage feedback from our code only; the fuzz targets link libFuzzer's
  # main with -fsanitize=fuzzer (tools/fuzz/CMakeLists.txt).
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

# Gives `target` and its consumers' links the sanitizer runtime: a static
# library of instrumented code (the runtime, a layer's object) cannot be
# linked without it. Exported with the installed package, so an out-of-tree
# consumer of a sanitized build links correctly too.
function(moe_sanitize_link_interface target)
  if(MOE_SANITIZE_FLAGS)
    target_link_options(${target} INTERFACE ${MOE_SANITIZE_FLAGS})
  endif()
endfunction()
