//===- CUDADriver.h - the CUDA driver API as the runtime loads it ---------===//
//
// The runtime must build without the CUDA toolkit and run without a driver,
// so it declares the few driver types and entry points it calls itself and
// resolves them with dlopen/dlsym. The opaque handle types use the struct
// tags of cuda.h, and test/Runtime/cuda_driver_abi_check.cpp compares every
// signature below with cuda.h where the toolkit is installed.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDADRIVER_H
#define MOE_LIB_RUNTIME_CUDADRIVER_H

#include <cstddef>
#include <cstdint>

struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;
struct CUmemPoolHandle_st;

namespace moe::cuda {

// Enums of cuda.h are passed as int: same size and registers.
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = CUctx_st *;
using CUmodule = CUmod_st *;
using CUfunction = CUfunc_st *;
using CUstream = CUstream_st *;
using CUfunction_attribute = int;
using CUmemoryPool = CUmemPoolHandle_st *;
using CUmemPool_attribute = int;

/// CUmemLocation and CUmemPoolProps of cuda.h, field for field (the ABI
/// check compares sizes and offsets).
struct CUmemLocation {
  int type; // CUmemLocationType
  int id;
};
struct CUmemPoolProps {
  int allocType;   // CUmemAllocationType
  int handleTypes; // CUmemAllocationHandleType
  CUmemLocation location;
  void *win32SecurityAttributes;
  size_t maxSize;
  unsigned short usage;
  unsigned char reserved[54];
};

constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
constexpr int CU_MEM_ALLOCATION_TYPE_PINNED = 1;
constexpr int CU_MEM_HANDLE_TYPE_NONE = 0;
constexpr int CU_MEM_LOCATION_TYPE_DEVICE = 1;
constexpr CUmemPool_attribute CU_MEMPOOL_ATTR_RELEASE_THRESHOLD = 4;
constexpr CUmemPool_attribute CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT = 5;
constexpr CUfunction_attribute CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES =
    8;

// One pointer type per entry point, named after the exported symbol (the
// `_v2` names are those cuda.h maps the plain names to).
using PFN_cuInit = CUresult (*)(unsigned int flags);
using PFN_cuDeviceGetCount = CUresult (*)(int *count);
using PFN_cuDeviceGet = CUresult (*)(CUdevice *device, int ordinal);
using PFN_cuDevicePrimaryCtxRetain = CUresult (*)(CUcontext *ctx,
                                                  CUdevice device);
using PFN_cuCtxGetCurrent = CUresult (*)(CUcontext *ctx);
using PFN_cuCtxSetCurrent = CUresult (*)(CUcontext ctx);
using PFN_cuCtxGetDevice = CUresult (*)(CUdevice *device);
using PFN_cuModuleLoadData = CUresult (*)(CUmodule *module, const void *image);
using PFN_cuModuleGetFunction = CUresult (*)(CUfunction *function,
                                             CUmodule module, const char *name);
using PFN_cuFuncSetAttribute = CUresult (*)(CUfunction function,
                                            CUfunction_attribute attribute,
                                            int value);
using PFN_cuLaunchKernel = CUresult (*)(
    CUfunction function, unsigned int gridDimX, unsigned int gridDimY,
    unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
    unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream stream,
    void **kernelParams, void **extra);
using PFN_cuMemAllocAsync = CUresult (*)(CUdeviceptr *ptr, size_t bytes,
                                         CUstream stream);
using PFN_cuMemFreeAsync = CUresult (*)(CUdeviceptr ptr, CUstream stream);
using PFN_cuMemPoolCreate = CUresult (*)(CUmemoryPool *pool,
                                         const CUmemPoolProps *props);
using PFN_cuMemPoolSetAttribute = CUresult (*)(CUmemoryPool pool,
                                               CUmemPool_attribute attribute,
                                               void *value);
using PFN_cuMemPoolGetAttribute = CUresult (*)(CUmemoryPool pool,
                                               CUmemPool_attribute attribute,
                                               void *value);
using PFN_cuMemPoolTrimTo = CUresult (*)(CUmemoryPool pool,
                                         size_t minBytesToKeep);
using PFN_cuMemAllocFromPoolAsync = CUresult (*)(CUdeviceptr *ptr,
                                                 size_t bytes,
                                                 CUmemoryPool pool,
                                                 CUstream stream);
using PFN_cuMemAlloc_v2 = CUresult (*)(CUdeviceptr *ptr, size_t bytes);
using PFN_cuMemFree_v2 = CUresult (*)(CUdeviceptr ptr);
using PFN_cuMemcpyHtoDAsync_v2 = CUresult (*)(CUdeviceptr dst, const void *src,
                                              size_t bytes, CUstream stream);
using PFN_cuMemcpyDtoHAsync_v2 = CUresult (*)(void *dst, CUdeviceptr src,
                                              size_t bytes, CUstream stream);
using PFN_cuStreamSynchronize = CUresult (*)(CUstream stream);
using PFN_cuGetErrorName = CUresult (*)(CUresult error, const char **name);
using PFN_cuGetErrorString = CUresult (*)(CUresult error,
                                          const char **description);

/// The entry points of a loaded driver, all non-null.
struct Driver {
  PFN_cuInit cuInit;
  PFN_cuDeviceGetCount cuDeviceGetCount;
  PFN_cuDeviceGet cuDeviceGet;
  PFN_cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRetain;
  PFN_cuCtxGetCurrent cuCtxGetCurrent;
  PFN_cuCtxSetCurrent cuCtxSetCurrent;
  PFN_cuCtxGetDevice cuCtxGetDevice;
  PFN_cuModuleLoadData cuModuleLoadData;
  PFN_cuModuleGetFunction cuModuleGetFunction;
  PFN_cuFuncSetAttribute cuFuncSetAttribute;
  PFN_cuLaunchKernel cuLaunchKernel;
  PFN_cuMemAllocAsync cuMemAllocAsync;
  PFN_cuMemFreeAsync cuMemFreeAsync;
  PFN_cuMemPoolCreate cuMemPoolCreate;
  PFN_cuMemPoolSetAttribute cuMemPoolSetAttribute;
  PFN_cuMemPoolGetAttribute cuMemPoolGetAttribute;
  PFN_cuMemPoolTrimTo cuMemPoolTrimTo;
  PFN_cuMemAllocFromPoolAsync cuMemAllocFromPoolAsync;
  PFN_cuMemAlloc_v2 cuMemAlloc_v2;
  PFN_cuMemFree_v2 cuMemFree_v2;
  PFN_cuMemcpyHtoDAsync_v2 cuMemcpyHtoDAsync_v2;
  PFN_cuMemcpyDtoHAsync_v2 cuMemcpyDtoHAsync_v2;
  PFN_cuStreamSynchronize cuStreamSynchronize;
  PFN_cuGetErrorName cuGetErrorName;
  PFN_cuGetErrorString cuGetErrorString;
};

/// Loads and initialises the driver on the first call (from any thread) and
/// makes a context current on the calling thread: the current one, else the
/// primary context of device 0. Returns the driver and sets *context, or
/// returns null having called moe_rt_fail(MOE_ERROR_CUDA, ...) with a message
/// that starts with `who`.
const Driver *acquireContext(const char *who, CUcontext *context);

/// Loads and initialises the driver once; null when that failed, with the
/// reason (no prefix) in *reason. *noDevice is set when cuInit found no
/// device (the driver loaded).
const Driver *loadDriver(const char **reason, bool *noDevice);

/// Records MOE_ERROR_CUDA for the failure `error` of driver call `call`:
/// "<who>: CUDA error <NAME> (<description>) in <call><detail>". Returns the
/// status code.
int32_t failWithCUDAError(const char *who, CUresult error, const char *call,
                          const char *detail = "");

/// Allocates `bytes` of scratch on `stream` from the runtime's pool of the
/// current context's device (CUDAScratchPool.cpp), creating it on first use.
/// On failure returns the error and sets *failedCall to the driver call that
/// failed.
CUresult allocateScratch(const Driver *driver, CUdeviceptr *ptr, size_t bytes,
                         CUstream stream, const char **failedCall);

/// What allocations of 0 bytes return: not null (null means failure), never
/// dereferenced, and ignored by the frees.
void *zeroSizeAllocation();

/// Formats "<NAME> (<description>)" of `error` into `buffer`.
void describeCUDAError(CUresult error, char *buffer, size_t size);

} // namespace moe::cuda

#endif // MOE_LIB_RUNTIME_CUDADRIVER_H
