# Install rules and the exported CMake package MoEMLIR. Included by the
# top-level CMakeLists.txt once lib/ and tools/ have defined their targets.
#
#   <prefix>/bin/moe-compile, moe-opt
#   <prefix>/lib/libmoe_runtime.so, libmoe_runtime.a
#   <prefix>/include/moe-c/moe_runtime.h
#   <prefix>/lib/cmake/MoEMLIR/MoEMLIRConfig.cmake, ...ConfigVersion.cmake,
#       MoEMLIRTargets*.cmake, MoEMLIR.cmake (moe_add_layer),
#       MoEMLIRCheckLayer.cmake
#
# The build tree exports the same package in <build>/lib/cmake/MoEMLIR, so a
# consumer can also use -DMoEMLIR_DIR=<build>/lib/cmake/MoEMLIR uninstalled.

include(CMakePackageConfigHelpers)

set(MOE_INSTALL_BINDIR bin)
# moe-compile finds libmoe_runtime.a as <dir of moe-compile>/../lib: keep the
# runtime in lib/, not lib64/ or a multiarch directory.
set(MOE_INSTALL_LIBDIR lib)
set(MOE_INSTALL_INCLUDEDIR include)
set(MOE_INSTALL_CMAKEDIR ${MOE_INSTALL_LIBDIR}/cmake/MoEMLIR)

# The tools link libMLIR.so/libLLVM.so from the LLVM installation (not copied
# into the prefix): their installed RUNPATH must name its lib directory.
foreach(tool moe-compile moe-opt)
  set_property(TARGET ${tool} APPEND PROPERTY INSTALL_RPATH "${LLVM_LIBRARY_DIR}")
endforeach()

install(TARGETS moe-compile moe-opt
  EXPORT MoEMLIRTargets
  RUNTIME DESTINATION ${MOE_INSTALL_BINDIR} COMPONENT moe-tools)
install(TARGETS moe_runtime moe_runtime_static
  EXPORT MoEMLIRTargets
  LIBRARY DESTINATION ${MOE_INSTALL_LIBDIR} COMPONENT moe-runtime
  ARCHIVE DESTINATION ${MOE_INSTALL_LIBDIR} COMPONENT moe-runtime)
install(FILES ${PROJECT_SOURCE_DIR}/include/moe-c/moe_runtime.h
  DESTINATION ${MOE_INSTALL_INCLUDEDIR}/moe-c COMPONENT moe-runtime)

install(EXPORT MoEMLIRTargets
  NAMESPACE MoEMLIR::
  DESTINATION ${MOE_INSTALL_CMAKEDIR}
  COMPONENT moe-cmake)

# The installed package.
set(MOE_CONFIG_INCLUDE_DIR ${MOE_INSTALL_INCLUDEDIR})
set(MOE_CONFIG_BIN_DIR ${MOE_INSTALL_BINDIR})
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/MoEMLIRConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/install/MoEMLIRConfig.cmake
  INSTALL_DESTINATION ${MOE_INSTALL_CMAKEDIR}
  PATH_VARS MOE_CONFIG_INCLUDE_DIR MOE_CONFIG_BIN_DIR)
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/lib/cmake/MoEMLIR/MoEMLIRConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/cmake/install/MoEMLIRConfig.cmake
  ${PROJECT_BINARY_DIR}/lib/cmake/MoEMLIR/MoEMLIRConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/MoEMLIR.cmake
  ${PROJECT_SOURCE_DIR}/cmake/MoEMLIRCheckLayer.cmake
  DESTINATION ${MOE_INSTALL_CMAKEDIR}
  COMPONENT moe-cmake)

# The build-tree package: the same targets, at their build locations.
export(EXPORT MoEMLIRTargets
  NAMESPACE MoEMLIR::
  FILE ${PROJECT_BINARY_DIR}/lib/cmake/MoEMLIR/MoEMLIRTargets.cmake)
set(MOE_CONFIG_INCLUDE_DIR ${PROJECT_SOURCE_DIR}/include)
set(MOE_CONFIG_BIN_DIR ${LLVM_RUNTIME_OUTPUT_INTDIR})
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/MoEMLIRConfig.cmake.in
  ${PROJECT_BINARY_DIR}/lib/cmake/MoEMLIR/MoEMLIRConfig.cmake
  INSTALL_DESTINATION ${PROJECT_BINARY_DIR}/lib/cmake/MoEMLIR
  INSTALL_PREFIX ${PROJECT_BINARY_DIR}
  PATH_VARS MOE_CONFIG_INCLUDE_DIR MOE_CONFIG_BIN_DIR)
foreach(file MoEMLIR.cmake MoEMLIRCheckLayer.cmake)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${file}
    ${PROJECT_BINARY_DIR}/lib/cmake/MoEMLIR/${file} COPYONLY)
endforeach()
