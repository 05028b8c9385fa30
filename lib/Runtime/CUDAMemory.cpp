//===- CUDAMemory.cpp - device memory and copies for callers and tests ----===//
//
// Callers without a framework (Python with NumPy inputs) and the tests need
// device buffers, copies and a wait; frameworks bring their own. Each call
// makes a context current as moe_rt_cuda_begin does, so the buffers live in
// the context the layer's kernels then run in.
//
//===----------------------------------------------------------------------===//

#include "CUDADriver.h"

#include "moe-c/moe_runtime.h"

#include <cstdio>

using namespace moe::cuda;

namespace {
CUdeviceptr toDevice(const void *ptr) {
  return static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(ptr));
}

/// The checks the two copies share; MOE_OK when the copy may proceed.
int32_t checkCopy(const char *who, const void *dst, const void *src,
                  int64_t bytes) {
  char message[256];
  if (bytes < 0) {
    std::snprintf(message, sizeof(message), "%s: negative size %lld", who,
                  static_cast<long long>(bytes));
    return moe_rt_fail(MOE_ERROR_BAD_SIZE, message);
  }
  if (bytes > 0 && (!dst || !src)) {
    std::snprintf(message, sizeof(message), "%s: %s is NULL", who,
                  dst ? "the source" : "the destination");
    return moe_rt_fail(MOE_ERROR_NULL_ARGUMENT, message);
  }
  return MOE_OK;
}
} // namespace

extern "C" int32_t moe_cuda_device_count(void) {
  const char *reason = nullptr;
  bool noDevice = false;
  const Driver *driver = loadDriver(&reason, &noDevice);
  if (!driver) {
    if (noDevice)
      return 0;
    char message[512];
    std::snprintf(message, sizeof(message), "moe_cuda_device_count: %s",
                  reason);
    moe_rt_fail(MOE_ERROR_CUDA, message);
    return -1;
  }
  int count = 0;
  CUresult result = driver->cuDeviceGetCount(&count);
  if (result != CUDA_SUCCESS) {
    failWithCUDAError("moe_cuda_device_count", result, "cuDeviceGetCount");
    return -1;
  }
  return count;
}

extern "C" void *moe_cuda_malloc(int64_t bytes) {
  if (bytes < 0) {
    char message[128];
    std::snprintf(message, sizeof(message),
                  "moe_cuda_malloc: negative size %lld",
                  static_cast<long long>(bytes));
    moe_rt_fail(MOE_ERROR_BAD_SIZE, message);
    return nullptr;
  }
  CUcontext context = nullptr;
  const Driver *driver = acquireContext("moe_cuda_malloc", &context);
  if (!driver)
    return nullptr;
  // cuMemAlloc refuses 0 bytes.
  if (bytes == 0)
    return zeroSizeAllocation();
  CUdeviceptr ptr = 0;
  CUresult result = driver->cuMemAlloc_v2(&ptr, static_cast<size_t>(bytes));
  if (result == CUDA_SUCCESS)
    return reinterpret_cast<void *>(static_cast<uintptr_t>(ptr));
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    char message[256];
    std::snprintf(message, sizeof(message),
                  "moe_cuda_malloc: out of device memory allocating %lld "
                  "bytes",
                  static_cast<long long>(bytes));
    moe_rt_fail(MOE_ERROR_OUT_OF_MEMORY, message);
  } else {
    failWithCUDAError("moe_cuda_malloc", result, "cuMemAlloc");
  }
  return nullptr;
}

extern "C" void moe_cuda_free(void *ptr) {
  if (!ptr || ptr == zeroSizeAllocation())
    return;
  CUcontext context = nullptr;
  const Driver *driver = acquireContext("moe_cuda_free", &context);
  if (!driver)
    return;
  if (CUresult result = driver->cuMemFree_v2(toDevice(ptr));
      result != CUDA_SUCCESS)
    failWithCUDAError("moe_cuda_free", result, "cuMemFree");
}

extern "C" int32_t moe_cuda_memcpy_to_device(void *dst, const void *src,
                                             int64_t bytes, void *stream) {
  const char *who = "moe_cuda_memcpy_to_device";
  if (int32_t status = checkCopy(who, dst, src, bytes))
    return status;
  if (bytes == 0)
    return MOE_OK;
  CUcontext context = nullptr;
  const Driver *driver = acquireContext(who, &context);
  if (!driver)
    return MOE_ERROR_CUDA;
  CUresult result = driver->cuMemcpyHtoDAsync_v2(toDevice(dst), src,
                                                 static_cast<size_t>(bytes),
                                                 static_cast<CUstream>(stream));
  if (result != CUDA_SUCCESS)
    return failWithCUDAError(who, result, "cuMemcpyHtoDAsync");
  return MOE_OK;
}

extern "C" int32_t moe_cuda_memcpy_to_host(void *dst, const void *src,
                                           int64_t bytes, void *stream) {
  const char *who = "moe_cuda_memcpy_to_host";
  if (int32_t status = checkCopy(who, dst, src, bytes))
    return status;
  if (bytes == 0)
    return MOE_OK;
  CUcontext context = nullptr;
  const Driver *driver = acquireContext(who, &context);
  if (!driver)
    return MOE_ERROR_CUDA;
  CUresult result = driver->cuMemcpyDtoHAsync_v2(dst, toDevice(src),
                                                 static_cast<size_t>(bytes),
                                                 static_cast<CUstream>(stream));
  if (result != CUDA_SUCCESS)
    return failWithCUDAError(who, result, "cuMemcpyDtoHAsync");
  return MOE_OK;
}

extern "C" int32_t moe_cuda_synchronize(void *stream) {
  CUcontext context = nullptr;
  const Driver *driver = acquireContext("moe_cuda_synchronize", &context);
  if (!driver)
    return MOE_ERROR_CUDA;
  CUresult result = driver->cuStreamSynchronize(static_cast<CUstream>(stream));
  if (result != CUDA_SUCCESS)
    return failWithCUDAError("moe_cuda_synchronize", result,
                             "cuStreamSynchronize");
  return MOE_OK;
}
