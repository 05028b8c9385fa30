//===- cuda_driver_abi_check.cpp - runtime's driver API against cuda.h ----===//
//
// The runtime declares the driver entry points itself (it must build without
// the toolkit), and a wrong signature would only show on a GPU. Built where
// cuda.h exists: each pointer type of lib/Runtime/CUDADriver.h must be the
// type of the exported symbol in cuda.h, with cuda.h's enums read as the int
// the runtime passes. Compiling this file is the test; it holds no code.
//
//===----------------------------------------------------------------------===//

#include <cuda.h>

#include "CUDADriver.h"

#include <cstddef>
#include <type_traits>

namespace {
/// An enum of cuda.h as the runtime declares it: an int of the same size.
template <typename T, bool = std::is_enum_v<T>> struct AsDeclared {
  using type = T;
};
template <typename T> struct AsDeclared<T, true> {
  static_assert(sizeof(T) == sizeof(int), "cuda.h enum is not int-sized");
  using type = int;
};

/// The pool properties, which the runtime mirrors field for field (checked
/// below).
template <> struct AsDeclared<const ::CUmemPoolProps *, false> {
  using type = const moe::cuda::CUmemPoolProps *;
};

template <typename Fn> struct Normalized;
template <typename R, typename... Args> struct Normalized<R (*)(Args...)> {
  using type =
      typename AsDeclared<R>::type (*)(typename AsDeclared<Args>::type...);
};

template <typename Fn>
using NormalizedT = typename Normalized<std::remove_cv_t<Fn>>::type;
} // namespace

// `name` is the exported symbol; cuda.h's macros map the plain names
// (cuMemAlloc, cuMemcpyHtoDAsync) to the same `_v2` symbols.
#define MOE_CHECK_DRIVER_ABI(name)                                             \
  static_assert(                                                               \
      std::is_same_v<NormalizedT<decltype(&::name)>, moe::cuda::PFN_##name>,   \
      "CUDADriver.h declares " #name " unlike cuda.h");

MOE_CHECK_DRIVER_ABI(cuInit)
MOE_CHECK_DRIVER_ABI(cuDeviceGetCount)
MOE_CHECK_DRIVER_ABI(cuDeviceGet)
MOE_CHECK_DRIVER_ABI(cuDevicePrimaryCtxRetain)
MOE_CHECK_DRIVER_ABI(cuCtxGetCurrent)
MOE_CHECK_DRIVER_ABI(cuCtxSetCurrent)
MOE_CHECK_DRIVER_ABI(cuCtxGetDevice)
MOE_CHECK_DRIVER_ABI(cuModuleLoadData)
MOE_CHECK_DRIVER_ABI(cuModuleGetFunction)
MOE_CHECK_DRIVER_ABI(cuFuncSetAttribute)
MOE_CHECK_DRIVER_ABI(cuLaunchKernel)
MOE_CHECK_DRIVER_ABI(cuMemAllocAsync)
MOE_CHECK_DRIVER_ABI(cuMemFreeAsync)
MOE_CHECK_DRIVER_ABI(cuMemPoolCreate)
MOE_CHECK_DRIVER_ABI(cuMemPoolSetAttribute)
MOE_CHECK_DRIVER_ABI(cuMemPoolGetAttribute)
MOE_CHECK_DRIVER_ABI(cuMemPoolTrimTo)
MOE_CHECK_DRIVER_ABI(cuMemAllocFromPoolAsync)
MOE_CHECK_DRIVER_ABI(cuMemAlloc_v2)
MOE_CHECK_DRIVER_ABI(cuMemFree_v2)
MOE_CHECK_DRIVER_ABI(cuMemcpyHtoDAsync_v2)
MOE_CHECK_DRIVER_ABI(cuMemcpyDtoHAsync_v2)
MOE_CHECK_DRIVER_ABI(cuStreamSynchronize)
MOE_CHECK_DRIVER_ABI(cuGetErrorName)
MOE_CHECK_DRIVER_ABI(cuGetErrorString)

// The constants the runtime uses.
static_assert(moe::cuda::CUDA_SUCCESS == ::CUDA_SUCCESS);
static_assert(moe::cuda::CUDA_ERROR_OUT_OF_MEMORY ==
              ::CUDA_ERROR_OUT_OF_MEMORY);
static_assert(moe::cuda::CUDA_ERROR_NO_DEVICE == ::CUDA_ERROR_NO_DEVICE);
static_assert(moe::cuda::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES ==
              ::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES);
static_assert(std::is_same_v<moe::cuda::CUdeviceptr, ::CUdeviceptr>);
static_assert(std::is_same_v<moe::cuda::CUcontext, ::CUcontext>);
static_assert(std::is_same_v<moe::cuda::CUstream, ::CUstream>);
static_assert(std::is_same_v<moe::cuda::CUmemoryPool, ::CUmemoryPool>);
static_assert(moe::cuda::CU_MEM_ALLOCATION_TYPE_PINNED ==
              ::CU_MEM_ALLOCATION_TYPE_PINNED);
static_assert(moe::cuda::CU_MEM_HANDLE_TYPE_NONE == ::CU_MEM_HANDLE_TYPE_NONE);
static_assert(moe::cuda::CU_MEM_LOCATION_TYPE_DEVICE ==
              ::CU_MEM_LOCATION_TYPE_DEVICE);
static_assert(moe::cuda::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD ==
              ::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD);
static_assert(moe::cuda::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT ==
              ::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);

// The mirrored structs: same size, same offsets.
#define MOE_CHECK_FIELD(type, field)                                           \
  static_assert(offsetof(moe::cuda::type, field) == offsetof(::type, field) && \
                    sizeof(moe::cuda::type::field) == sizeof(::type::field),   \
                #type "::" #field " differs from cuda.h");
static_assert(sizeof(moe::cuda::CUmemLocation) == sizeof(::CUmemLocation));
MOE_CHECK_FIELD(CUmemLocation, type)
MOE_CHECK_FIELD(CUmemLocation, id)
static_assert(sizeof(moe::cuda::CUmemPoolProps) == sizeof(::CUmemPoolProps));
MOE_CHECK_FIELD(CUmemPoolProps, allocType)
MOE_CHECK_FIELD(CUmemPoolProps, handleTypes)
MOE_CHECK_FIELD(CUmemPoolProps, location)
MOE_CHECK_FIELD(CUmemPoolProps, win32SecurityAttributes)
MOE_CHECK_FIELD(CUmemPoolProps, maxSize)
MOE_CHECK_FIELD(CUmemPoolProps, usage)
MOE_CHECK_FIELD(CUmemPoolProps, reserved)
