/*===- fake_cuda_driver.c - a host-only stand-in for libcuda.so.1 ---------===*
 *
 * The runtime's CUDA path is tested in CI, which has no GPU, by pointing
 * MOE_CUDA_DRIVER at this library. It exports the driver entry points the
 * runtime resolves, with the same signatures, and works on host memory:
 *   FAKE_CUDA_DEVICES=N      devices cuDeviceGetCount reports (default 1)
 *   FAKE_CUDA_FAIL=NAME[:N]  entry point NAME returns error N (default: the
 *                            error a real driver would give for that call)
 *   FAKE_CUDA_LOG=PATH       where the call log goes (default stderr)
 * Module images are accepted when they start with the ELF magic, the fatbin
 * magic (0xBA55ED50, little-endian) or "//" (PTX); each load, function
 * lookup, attribute, launch, allocation, memory pool call and context retain
 * is logged as one line, so lit tests can check what the runtime asked the
 * driver to do. Memory pools count their reserved bytes as the driver does.
 *
 *===----------------------------------------------------------------------===*/

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;

enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_IMAGE = 200,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
  CUDA_ERROR_LAUNCH_FAILED = 719,
  CUDA_ERROR_NOT_SUPPORTED = 801,
};

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t logMutex = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
/* Each device's primary context: distinct non-null addresses. */
static char primaryContexts[8];
static _Thread_local CUcontext currentContext;

static void logCall(const char *format, ...) {
  pthread_mutex_lock(&logMutex);
  const char *path = getenv("FAKE_CUDA_LOG");
  FILE *out = path && *path ? fopen(path, "a") : stderr;
  if (out) {
    va_list args;
    va_start(args, format);
    fputs("fake-cuda: ", out);
    vfprintf(out, format, args);
    fputc('\n', out);
    va_end(args);
    if (out != stderr)
      fclose(out);
    else
      fflush(out);
  }
  pthread_mutex_unlock(&logMutex);
}

/* The error `name` must return under FAKE_CUDA_FAIL, else CUDA_SUCCESS. */
static CUresult injected(const char *name, CUresult defaultError) {
  const char *fail = getenv("FAKE_CUDA_FAIL");
  size_t length = strlen(name);
  if (!fail || strncmp(fail, name, length) != 0 ||
      (fail[length] != '\0' && fail[length] != ':'))
    return CUDA_SUCCESS;
  if (fail[length] == ':')
    return (CUresult)strtol(fail + length + 1, NULL, 10);
  return defaultError;
}

#define INJECT(name, error)                                                    \
  do {                                                                         \
    CUresult injectedError = injected(name, error);                            \
    if (injectedError != CUDA_SUCCESS) {                                       \
      logCall("%s failing with %d", name, injectedError);                      \
      return injectedError;                                                    \
    }                                                                          \
  } while (0)

static int deviceCount(void) {
  const char *text = getenv("FAKE_CUDA_DEVICES");
  int count = text ? atoi(text) : 1;
  if (count < 0)
    count = 0;
  if (count > (int)sizeof(primaryContexts))
    count = (int)sizeof(primaryContexts);
  return count;
}

EXPORT CUresult cuInit(unsigned int flags) {
  INJECT("cuInit", CUDA_ERROR_NO_DEVICE);
  if (flags != 0)
    return CUDA_ERROR_INVALID_VALUE;
  initialized = 1;
  logCall("cuInit");
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int *count) {
  INJECT("cuDeviceGetCount", CUDA_ERROR_NOT_INITIALIZED);
  if (!initialized)
    return CUDA_ERROR_NOT_INITIALIZED;
  *count = deviceCount();
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal) {
  INJECT("cuDeviceGet", CUDA_ERROR_INVALID_DEVICE);
  if (ordinal < 0 || ordinal >= deviceCount())
    return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice device) {
  INJECT("cuDevicePrimaryCtxRetain", CUDA_ERROR_OUT_OF_MEMORY);
  if (device < 0 || device >= deviceCount())
    return CUDA_ERROR_INVALID_DEVICE;
  *ctx = (CUcontext)&primaryContexts[device];
  logCall("cuDevicePrimaryCtxRetain device=%d", device);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *ctx) {
  INJECT("cuCtxGetCurrent", CUDA_ERROR_NOT_INITIALIZED);
  *ctx = currentContext;
  return CUDA_SUCCESS;
}

/* Tests make a context of their own current with this too, as a framework
 * would before calling a layer. */
EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
  INJECT("cuCtxSetCurrent", CUDA_ERROR_INVALID_CONTEXT);
  currentContext = ctx;
  logCall("cuCtxSetCurrent ctx=%p", (void *)ctx);
  return CUDA_SUCCESS;
}

struct CUmod_st {
  CUcontext context;
};

struct CUfunc_st {
  CUmodule module;
  char *name;
};

static const char *imageKind(const void *image) {
  const unsigned char *bytes = (const unsigned char *)image;
  if (memcmp(bytes, "\177ELF", 4) == 0)
    return "cubin";
  if (bytes[0] == 0x50 && bytes[1] == 0xED && bytes[2] == 0x55 &&
      bytes[3] == 0xBA)
    return "fatbin";
  if (bytes[0] == '/' && bytes[1] == '/')
    return "ptx";
  return NULL;
}

EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image) {
  INJECT("cuModuleLoadData", CUDA_ERROR_INVALID_IMAGE);
  if (!currentContext)
    return CUDA_ERROR_INVALID_CONTEXT;
  const char *kind = image ? imageKind(image) : NULL;
  if (!kind) {
    logCall("cuModuleLoadData rejected image=%p", image);
    return CUDA_ERROR_INVALID_IMAGE;
  }
  struct CUmod_st *loaded = malloc(sizeof(*loaded));
  if (!loaded)
    return CUDA_ERROR_OUT_OF_MEMORY;
  loaded->context = currentContext;
  *module = loaded;
  logCall("cuModuleLoadData %s image=%p ctx=%p", kind, image,
          (void *)currentContext);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleGetFunction(CUfunction *function, CUmodule module,
                                    const char *name) {
  INJECT("cuModuleGetFunction", CUDA_ERROR_NOT_FOUND);
  if (!module || !name)
    return CUDA_ERROR_INVALID_VALUE;
  struct CUfunc_st *found = malloc(sizeof(*found));
  size_t length = strlen(name);
  if (!found || !(found->name = malloc(length + 1))) {
    free(found);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  memcpy(found->name, name, length + 1);
  found->module = module;
  *function = found;
  logCall("cuModuleGetFunction %s", name);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuFuncSetAttribute(CUfunction function, int attribute,
                                   int value) {
  INJECT("cuFuncSetAttribute", CUDA_ERROR_INVALID_VALUE);
  if (!function)
    return CUDA_ERROR_INVALID_HANDLE;
  logCall("cuFuncSetAttribute %s attribute=%d value=%d", function->name,
          attribute, value);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuLaunchKernel(CUfunction function, unsigned int gridDimX,
                               unsigned int gridDimY, unsigned int gridDimZ,
                               unsigned int blockDimX, unsigned int blockDimY,
                               unsigned int blockDimZ,
                               unsigned int sharedMemBytes, CUstream stream,
                               void **kernelParams, void **extra) {
  INJECT("cuLaunchKernel", CUDA_ERROR_LAUNCH_FAILED);
  if (!function)
    return CUDA_ERROR_INVALID_HANDLE;
  if (function->module->context != currentContext)
    return CUDA_ERROR_INVALID_CONTEXT;
  /* The fake cannot know how many parameters a kernel has: it logs the
   * array's address, which the test compares with its own. */
  logCall("launch %s grid=(%u,%u,%u) block=(%u,%u,%u) smem=%u stream=%p "
          "params=%p extra=%p",
          function->name, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY,
          blockDimZ, sharedMemBytes, (void *)stream, (void *)kernelParams,
          (void *)extra);
  return CUDA_SUCCESS;
}

/* Memory pools, modelled as the driver keeps them: freed memory stays
 * reserved until a synchronisation finds more than the release threshold
 * reserved, or a trim. Each stream-ordered allocation carries a header with
 * its size and pool. */
struct CUmemPoolHandle_st {
  int device;
  unsigned long long threshold;
  size_t used, reserved;
};
typedef struct CUmemPoolHandle_st *CUmemoryPool;
static struct CUmemPoolHandle_st pools[16];
static int poolCount;
static pthread_mutex_t poolMutex = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
  int type, id;
} CUmemLocation;
typedef struct {
  int allocType, handleTypes;
  CUmemLocation location;
  void *win32SecurityAttributes;
  size_t maxSize;
  unsigned short usage;
  unsigned char reserved[54];
} CUmemPoolProps;

enum {
  CU_MEMPOOL_ATTR_RELEASE_THRESHOLD = 4,
  CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT = 5,
};

typedef struct {
  size_t bytes;
  CUmemoryPool pool;
  /* Keeps the memory after the header 16-byte aligned, as malloc's is. */
  size_t padding;
} AllocationHeader;

static CUresult allocateOrdered(CUdeviceptr *ptr, size_t bytes,
                                CUmemoryPool pool) {
  if (!currentContext)
    return CUDA_ERROR_INVALID_CONTEXT;
  if (bytes == 0)
    return CUDA_ERROR_INVALID_VALUE;
  AllocationHeader *header = malloc(sizeof(AllocationHeader) + bytes);
  if (!header)
    return CUDA_ERROR_OUT_OF_MEMORY;
  header->bytes = bytes;
  header->pool = pool;
  if (pool) {
    pthread_mutex_lock(&poolMutex);
    pool->used += bytes;
    if (pool->used > pool->reserved)
      pool->reserved = pool->used;
    pthread_mutex_unlock(&poolMutex);
  }
  *ptr = (CUdeviceptr)(uintptr_t)(header + 1);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice(CUdevice *device) {
  INJECT("cuCtxGetDevice", CUDA_ERROR_INVALID_CONTEXT);
  if (!currentContext)
    return CUDA_ERROR_INVALID_CONTEXT;
  /* A primary context's device; contexts a test made are device 0's. */
  ptrdiff_t index = (char *)currentContext - primaryContexts;
  *device = index >= 0 && index < (ptrdiff_t)sizeof(primaryContexts)
                ? (int)index
                : 0;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool,
                                const CUmemPoolProps *props) {
  INJECT("cuMemPoolCreate", CUDA_ERROR_NOT_SUPPORTED);
  static const unsigned char zeros[54];
  if (!pool || !props || props->allocType != 1 || props->handleTypes != 0 ||
      props->location.type != 1 || props->location.id < 0 ||
      props->location.id >= deviceCount() || props->win32SecurityAttributes ||
      props->maxSize != 0 || props->usage != 0 ||
      memcmp(props->reserved, zeros, sizeof(zeros)) != 0)
    return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&poolMutex);
  if (poolCount == (int)(sizeof(pools) / sizeof(pools[0]))) {
    pthread_mutex_unlock(&poolMutex);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  CUmemoryPool created = &pools[poolCount++];
  pthread_mutex_unlock(&poolMutex);
  created->device = props->location.id;
  created->threshold = 0; /* the driver's default */
  *pool = created;
  logCall("cuMemPoolCreate device=%d", props->location.id);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, int attribute,
                                      void *value) {
  INJECT("cuMemPoolSetAttribute", CUDA_ERROR_INVALID_VALUE);
  if (!pool || !value || attribute != CU_MEMPOOL_ATTR_RELEASE_THRESHOLD)
    return CUDA_ERROR_INVALID_VALUE;
  pool->threshold = *(unsigned long long *)value;
  logCall("cuMemPoolSetAttribute release_threshold=%llu", pool->threshold);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, int attribute,
                                      void *value) {
  INJECT("cuMemPoolGetAttribute", CUDA_ERROR_INVALID_VALUE);
  if (!pool || !value || attribute != CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)
    return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&poolMutex);
  *(unsigned long long *)value = pool->reserved;
  pthread_mutex_unlock(&poolMutex);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep) {
  INJECT("cuMemPoolTrimTo", CUDA_ERROR_INVALID_VALUE);
  if (!pool)
    return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&poolMutex);
  if (pool->reserved > minBytesToKeep)
    pool->reserved = pool->used > minBytesToKeep ? pool->used : minBytesToKeep;
  pthread_mutex_unlock(&poolMutex);
  logCall("cuMemPoolTrimTo keep=%zu", minBytesToKeep);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *ptr, size_t bytes,
                                        CUmemoryPool pool, CUstream stream) {
  INJECT("cuMemAllocFromPoolAsync", CUDA_ERROR_OUT_OF_MEMORY);
  if (!pool)
    return CUDA_ERROR_INVALID_VALUE;
  CUresult result = allocateOrdered(ptr, bytes, pool);
  if (result == CUDA_SUCCESS)
    logCall("cuMemAllocFromPoolAsync bytes=%zu device=%d stream=%p", bytes,
            pool->device, (void *)stream);
  return result;
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *ptr, size_t bytes,
                                CUstream stream) {
  INJECT("cuMemAllocAsync", CUDA_ERROR_OUT_OF_MEMORY);
  CUresult result = allocateOrdered(ptr, bytes, NULL);
  if (result == CUDA_SUCCESS)
    logCall("cuMemAllocAsync bytes=%zu stream=%p", bytes, (void *)stream);
  return result;
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream stream) {
  INJECT("cuMemFreeAsync", CUDA_ERROR_INVALID_VALUE);
  AllocationHeader *header = (AllocationHeader *)(uintptr_t)ptr - 1;
  if (header->pool) {
    pthread_mutex_lock(&poolMutex);
    header->pool->used -= header->bytes;
    pthread_mutex_unlock(&poolMutex);
  }
  free(header);
  logCall("cuMemFreeAsync stream=%p", (void *)stream);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) {
  INJECT("cuMemAlloc_v2", CUDA_ERROR_OUT_OF_MEMORY);
  if (!currentContext)
    return CUDA_ERROR_INVALID_CONTEXT;
  if (bytes == 0)
    return CUDA_ERROR_INVALID_VALUE;
  void *memory = malloc(bytes);
  if (!memory)
    return CUDA_ERROR_OUT_OF_MEMORY;
  *ptr = (CUdeviceptr)(uintptr_t)memory;
  logCall("cuMemAlloc_v2 bytes=%zu", bytes);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr ptr) {
  INJECT("cuMemFree_v2", CUDA_ERROR_INVALID_VALUE);
  free((void *)(uintptr_t)ptr);
  logCall("cuMemFree_v2");
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src,
                                     size_t bytes, CUstream stream) {
  INJECT("cuMemcpyHtoDAsync_v2", CUDA_ERROR_INVALID_VALUE);
  memcpy((void *)(uintptr_t)dst, src, bytes);
  logCall("cuMemcpyHtoDAsync_v2 bytes=%zu stream=%p", bytes, (void *)stream);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t bytes,
                                     CUstream stream) {
  INJECT("cuMemcpyDtoHAsync_v2", CUDA_ERROR_INVALID_VALUE);
  memcpy(dst, (const void *)(uintptr_t)src, bytes);
  logCall("cuMemcpyDtoHAsync_v2 bytes=%zu stream=%p", bytes, (void *)stream);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(CUstream stream) {
  INJECT("cuStreamSynchronize", CUDA_ERROR_LAUNCH_FAILED);
  /* Pools holding more than their threshold hand memory back. */
  pthread_mutex_lock(&poolMutex);
  for (int i = 0; i < poolCount; ++i) {
    CUmemoryPool pool = &pools[i];
    if (pool->reserved > pool->threshold)
      pool->reserved =
          pool->used > pool->threshold ? pool->used : pool->threshold;
  }
  pthread_mutex_unlock(&poolMutex);
  logCall("cuStreamSynchronize stream=%p", (void *)stream);
  return CUDA_SUCCESS;
}

/* The names and descriptions of the real driver for the errors above. */
static const struct {
  CUresult code;
  const char *name;
  const char *description;
} errorTable[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED",
     "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE",
     "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE",
     "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE",
     "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT",
     "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE",
     "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
     "too many resources requested for launch"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED",
     "unspecified launch failure"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED",
     "operation not supported"},
};

EXPORT CUresult cuGetErrorName(CUresult error, const char **name) {
  for (size_t i = 0; i < sizeof(errorTable) / sizeof(errorTable[0]); ++i)
    if (errorTable[i].code == error) {
      *name = errorTable[i].name;
      return CUDA_SUCCESS;
    }
  *name = NULL;
  return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **description) {
  for (size_t i = 0; i < sizeof(errorTable) / sizeof(errorTable[0]); ++i)
    if (errorTable[i].code == error) {
      *description = errorTable[i].description;
      return CUDA_SUCCESS;
    }
  *description = NULL;
  return CUDA_ERROR_INVALID_VALUE;
}
