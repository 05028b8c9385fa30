# MoEMLIR.cmake - compile MoE layer specs into libraries an application links.
#
# Included by the MoE-MLIR build itself and by the installed package
# (find_package(MoEMLIR)); both define the targets this module uses:
#
#   MoEMLIR::moe-compile         the layer compiler (executable)
#   MoEMLIR::moe_runtime_static  libmoe_runtime.a (error reporting, memrefCopy)
#   MoEMLIR::moe_runtime         libmoe_runtime.so
#
# moe_add_layer(<target> SPEC <file>
#               [NAME <layer>] [HEADER <stem>]
#               [MCPU <cpu>] [MATTR <features>] [OPT <0-3>]
#               [SHARED_RUNTIME])
#
# At build time, runs `moe-compile --emit=obj` and `--emit=header` on the spec
# (a .yaml, .yml, .json spec or a .mlir moe module) and creates the STATIC
# library <target> holding the layer's object, that is <layer>_forward.
# Linking <target> gives a consumer:
#   - the generated header <stem>.h (default stem: <target>, with every
#     character outside [A-Za-z0-9_] replaced by '_') on its include path;
#     it includes "moe-c/moe_runtime.h", whose directory is public too;
#   - the runtime: MoEMLIR::moe_runtime_static, or MoEMLIR::moe_runtime (the
#     shared library) with SHARED_RUNTIME; and libm.
#
#   SPEC   the layer spec; relative paths are relative to the current source
#          directory. The build re-runs moe-compile when it or moe-compile
#          changes.
#   NAME   the spec's `name` (the layer's C name). When given, the build fails
#          with a clear message if the spec's entry point is not
#          <NAME>_forward. Also stored in the target property MOE_LAYER_NAME.
#   HEADER the generated header's file name without `.h`.
#   MCPU   --mcpu (default: moe-compile's, the host CPU `native`). Set it
#          (e.g. x86-64-v3) for binaries that must run on other machines.
#   MATTR  --mattr, e.g. +avx2,-avx512f.
#   OPT    the LLVM optimisation level, 0-3 (default: moe-compile's, 3).
#
# Target properties set on <target>: MOE_LAYER_SPEC, MOE_LAYER_HEADER (the
# header's full path), MOE_LAYER_NAME (when NAME is given).

include_guard(GLOBAL)
if(CMAKE_VERSION VERSION_LESS 3.20)
  message(FATAL_ERROR "MoEMLIR.cmake needs CMake 3.20 or newer")
endif()
# The function records these policies; the includer's stay as they are.
cmake_policy(PUSH)
cmake_policy(VERSION 3.20)

set(_MOE_LAYER_CHECK_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/MoEMLIRCheckLayer.cmake")

function(moe_add_layer target)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "SHARED_RUNTIME"
                        "SPEC;NAME;HEADER;MCPU;MATTR;OPT" "")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR
      "moe_add_layer(${target}): unknown arguments: ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT ARG_SPEC)
    message(FATAL_ERROR "moe_add_layer(${target}): SPEC <file> is required")
  endif()
  if(DEFINED ARG_OPT AND NOT ARG_OPT MATCHES "^[0-3]$")
    message(FATAL_ERROR
      "moe_add_layer(${target}): OPT must be 0, 1, 2 or 3, got '${ARG_OPT}'")
  endif()
  if(ARG_NAME AND NOT ARG_NAME MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR
      "moe_add_layer(${target}): NAME '${ARG_NAME}' is not a C identifier")
  endif()
  if(NOT TARGET MoEMLIR::moe-compile)
    message(FATAL_ERROR
      "moe_add_layer(${target}): no MoEMLIR::moe-compile target; "
      "use find_package(MoEMLIR CONFIG REQUIRED) first")
  endif()

  get_filename_component(spec "${ARG_SPEC}" ABSOLUTE
                         BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  if(NOT EXISTS "${spec}")
    message(FATAL_ERROR "moe_add_layer(${target}): no spec file '${spec}'")
  endif()
  if(ARG_HEADER)
    set(stem "${ARG_HEADER}")
  else()
    string(MAKE_C_IDENTIFIER "${target}" stem)
  endif()
  if(NOT stem MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    # The stem names the header's include guard.
    message(FATAL_ERROR
      "moe_add_layer(${target}): HEADER '${stem}' is not a C identifier")
  endif()

  set(outdir "${CMAKE_CURRENT_BINARY_DIR}/moe_layers/${target}")
  set(object "${outdir}/${stem}${CMAKE_C_OUTPUT_EXTENSION}")
  if(NOT CMAKE_C_OUTPUT_EXTENSION)
    set(object "${outdir}/${stem}.o")
  endif()
  set(header "${outdir}/${stem}.h")

  set(codegen_flags)
  if(ARG_MCPU)
    list(APPEND codegen_flags "--mcpu=${ARG_MCPU}")
  endif()
  if(ARG_MATTR)
    list(APPEND codegen_flags "--mattr=${ARG_MATTR}")
  endif()
  if(DEFINED ARG_OPT)
    list(APPEND codegen_flags "-O${ARG_OPT}")
  endif()

  # In the MoE-MLIR build MoEMLIR::moe-compile aliases the moe-compile target:
  # depend on that target, so that it is built first and a rebuilt compiler
  # recompiles the layer. From an installed package depend on the file.
  set(compiler MoEMLIR::moe-compile)
  get_target_property(aliased ${compiler} ALIASED_TARGET)
  if(aliased)
    set(compiler_dependency ${aliased})
  else()
    set(compiler_dependency "$<TARGET_FILE:${compiler}>")
  endif()

  set(check_command)
  if(ARG_NAME)
    set(check_command COMMAND "${CMAKE_COMMAND}"
      "-DMOE_LAYER_HEADER=${header}" "-DMOE_LAYER_NAME=${ARG_NAME}"
      "-DMOE_LAYER_SPEC=${spec}" -P "${_MOE_LAYER_CHECK_SCRIPT}")
  endif()

  file(MAKE_DIRECTORY "${outdir}")
  add_custom_command(
    OUTPUT "${header}"
    COMMAND ${compiler} --emit=header "${spec}" -o "${header}"
    ${check_command}
    DEPENDS "${spec}" ${compiler_dependency}
    COMMENT "moe-compile --emit=header ${ARG_SPEC} (${target})"
    VERBATIM)
  add_custom_command(
    OUTPUT "${object}"
    COMMAND ${compiler} --emit=obj ${codegen_flags} "${spec}" -o "${object}"
    DEPENDS "${spec}" ${compiler_dependency}
    COMMENT "moe-compile --emit=obj ${ARG_SPEC} (${target})"
    VERBATIM)

  add_library(${target} STATIC "${object}" "${header}")
  set_source_files_properties("${object}" PROPERTIES
    EXTERNAL_OBJECT TRUE GENERATED TRUE)
  set_source_files_properties("${header}" PROPERTIES
    HEADER_FILE_ONLY TRUE GENERATED TRUE)
  # The library has no sources to compile; link it with whichever language
  # the project enabled.
  get_property(languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if("C" IN_LIST languages)
    set(link_language C)
  else()
    set(link_language CXX)
  endif()
  set_target_properties(${target} PROPERTIES
    LINKER_LANGUAGE ${link_language}
    POSITION_INDEPENDENT_CODE ON
    MOE_LAYER_SPEC "${spec}"
    MOE_LAYER_HEADER "${header}")
  if(ARG_NAME)
    set_target_properties(${target} PROPERTIES MOE_LAYER_NAME "${ARG_NAME}")
  endif()
  target_include_directories(${target} PUBLIC "$<BUILD_INTERFACE:${outdir}>")
  if(ARG_SHARED_RUNTIME)
    target_link_libraries(${target} PUBLIC MoEMLIR::moe_runtime)
  else()
    target_link_libraries(${target} PUBLIC MoEMLIR::moe_runtime_static)
  endif()
  if(UNIX)
    target_link_libraries(${target} PUBLIC m)
  endif()
endfunction()

cmake_policy(POP)
