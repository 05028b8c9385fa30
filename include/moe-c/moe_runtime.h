/*===- moe_runtime.h - C ABI of the MoE-MLIR runtime ----------------------===*
 *
 * Generated layer entry points return one of these status codes; the message
 * of the last failure on the calling thread is kept by the runtime. The
 * runtime also runs the parallel loops of generated kernels on its threads
 * and, for `--target=cuda`, launches their GPU kernels through the CUDA
 * driver API, which it loads with dlopen on first use.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_H
#define MOE_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moe_status {
  MOE_OK = 0,
  /* A required pointer argument was NULL. */
  MOE_ERROR_NULL_ARGUMENT = 1,
  /* A size argument disagrees with the compiled layer (or is < 1). */
  MOE_ERROR_BAD_SIZE = 2,
  /* Scratch memory could not be allocated (nothing was written). */
  MOE_ERROR_OUT_OF_MEMORY = 3,
  /* A CUDA driver call failed, or there is no CUDA driver or device. */
  MOE_ERROR_CUDA = 4,
} moe_status;

/* Records a failure of the calling thread; returns `code` for tail calls.
 * Called by generated code. */
int32_t moe_rt_fail(int32_t code, const char *message);

/* The message of the calling thread's last failure ("" if none). */
const char *moe_last_error(void);

/* The status code of the calling thread's last failure (MOE_OK if none). */
int32_t moe_last_error_code(void);

/* Clears the calling thread's failure record. */
void moe_clear_error(void);

/* Name of a status code ("MOE_OK", ...). */
const char *moe_status_name(int32_t code);

/* Allocates `size` bytes of scratch memory, 64-byte aligned, for all the
 * kernels of one call of `entry_point`, before any of them runs. On failure
 * (or above the limit of moe_set_scratch_limit) records
 * MOE_ERROR_OUT_OF_MEMORY with a message naming `entry_point` and the size,
 * and returns NULL. A negative `size` (the sizes overflowed) fails too.
 * Called by generated code; free with moe_rt_free_scratch. */
void *moe_rt_alloc_scratch(int64_t size, const char *entry_point);

/* Frees memory of moe_rt_alloc_scratch. Called by generated code. */
void moe_rt_free_scratch(void *ptr);

/* Makes every scratch allocation of more than `bytes` bytes fail as if memory
 * had run out: the entry point returns MOE_ERROR_OUT_OF_MEMORY having written
 * nothing. For testing that path and for capping a kernel's memory; bytes < 0
 * removes the limit (the default). Applies to all threads of this copy of the
 * runtime. Returns the previous limit (-1: none). */
int64_t moe_set_scratch_limit(int64_t bytes);

/* The limit of moe_set_scratch_limit (-1: none). */
int64_t moe_get_scratch_limit(void);

/* Runs fn(ctx, i) once for every i in [0, n) and returns when all are done.
 * Called by generated code. Items may run in any order on any thread: the
 * calling thread and up to moe_get_num_threads() - 1 persistent workers take
 * them one at a time. A call from inside fn, or while another thread's loop
 * occupies the workers, runs its items inline on the calling thread. */
void moe_rt_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i),
                         void *ctx);

/* Sets the number of threads kernels use (the calling thread included);
 * n <= 0 restores the default: $MOE_NUM_THREADS if set to a positive integer,
 * else every core the process may run on (sched_getaffinity), read once.
 * Takes effect from the next parallel loop. Returns the number now in effect.
 * Each copy of the runtime has its own threads and setting: a library from
 * `moe-compile --emit=shared` embeds one, so set it through that library. */
int32_t moe_set_num_threads(int32_t n);

/* The number of threads kernels use (the calling thread included). */
int32_t moe_get_num_threads(void);

/*===--------------------------------------------------------------------===*
 * CUDA: the driver API (libcuda.so.1, or the library named by
 * $MOE_CUDA_DRIVER, read once) is loaded with dlopen on the first call of any
 * function below, so programs and layer libraries build, link and start on
 * machines without a GPU; there these functions fail with MOE_ERROR_CUDA.
 * Every call makes a context current on the calling thread: the one already
 * current there (a framework such as PyTorch sets its own), else the primary
 * context of device 0. Device pointers are passed as `void *`, streams as
 * `void *` CUstreams (NULL: the legacy default stream).
 *===--------------------------------------------------------------------===*/

/* Starts one call of `entry_point` on the calling thread: loads and
 * initialises the driver, makes a context current, records `stream` for the
 * launches, scratch allocations and frees that follow and clears the call's
 * status. Returns MOE_OK, or MOE_ERROR_CUDA with a message naming
 * `entry_point` and the reason (no driver, no device, the failing driver call
 * and its error). Called by generated code; end the call with
 * moe_rt_cuda_end. */
int32_t moe_rt_cuda_begin(void *stream, const char *entry_point);

/* Launches `kernel` of the cubin or fatbin `image` on the stream of the
 * current call with a grid of grid_x * grid_y * grid_z blocks of
 * block_x * block_y * block_z threads, `shared_bytes` bytes of dynamic shared
 * memory and the kernel parameters `params` (as cuLaunchKernel takes them).
 * The module of an image is loaded once per context and found again by the
 * image's address; functions are cached per module and kernel name. A grid
 * with a dimension of 0 launches nothing. Grids and blocks outside the
 * hardware limits (grid x < 2^31, y and z < 65536; block x and y <= 1024,
 * z <= 64, at most 1024 threads) and failing driver calls record an error in
 * the call's status (with moe_rt_fail), and every later launch of the call is
 * skipped: generated code cannot leave the middle of a layer, it reads the
 * status at moe_rt_cuda_end. Called by generated code. */
void moe_rt_cuda_launch(const void *image, const char *kernel, int64_t grid_x,
                        int64_t grid_y, int64_t grid_z, int64_t block_x,
                        int64_t block_y, int64_t block_z, int32_t shared_bytes,
                        void **params);

/* Ends the call of the calling thread: returns MOE_OK or the code of the
 * call's first error (whose message moe_rt_fail already recorded), and
 * clears the call's status. Does not wait for the launched kernels. Called
 * by generated code. */
int32_t moe_rt_cuda_end(void);

/* Allocates `size` bytes of device scratch memory for the current call,
 * ordered on its stream, from the runtime's memory pool of the device
 * (cuMemAllocFromPoolAsync; see moe_cuda_set_scratch_cache_limit). Same
 * contract as
 * moe_rt_alloc_scratch: on failure (or above the limit of
 * moe_set_scratch_limit, or for a negative size) records
 * MOE_ERROR_OUT_OF_MEMORY, or MOE_ERROR_CUDA when the driver failed for
 * another reason, with a message naming `entry_point`, in moe_last_error and
 * in the call's status, and returns NULL. Size 0 returns a non-NULL pointer
 * that must not be dereferenced. Called by generated code between
 * moe_rt_cuda_begin and moe_rt_cuda_end; free with moe_rt_cuda_free_scratch. */
void *moe_rt_cuda_alloc_scratch(int64_t size, const char *entry_point);

/* Frees memory of moe_rt_cuda_alloc_scratch, ordered on the current call's
 * stream (cuMemFreeAsync): kernels launched before it may still use it.
 * Called by generated code before moe_rt_cuda_end. */
void moe_rt_cuda_free_scratch(void *ptr);

/* The number of CUDA devices; 0 when the driver reports none, -1 (with the
 * reason in moe_last_error, code MOE_ERROR_CUDA) when the driver cannot be
 * loaded or initialised. */
int32_t moe_cuda_device_count(void);

/* Allocates `bytes` bytes of device memory (cuMemAlloc). Returns NULL on
 * failure with MOE_ERROR_OUT_OF_MEMORY (the device is full), MOE_ERROR_CUDA
 * or MOE_ERROR_BAD_SIZE (bytes < 0) recorded. 0 bytes returns a non-NULL
 * pointer that must not be dereferenced. Free with moe_cuda_free. For
 * callers without a framework (NumPy inputs) and for tests. */
void *moe_cuda_malloc(int64_t bytes);

/* Frees memory of moe_cuda_malloc (cuMemFree; NULL is ignored). Free it once
 * no queued work uses it any more (after moe_cuda_synchronize). Failures are
 * recorded in moe_last_error. */
void moe_cuda_free(void *ptr);

/* Copies `bytes` bytes from host memory `src` to device memory `dst`, ordered
 * on `stream` (cuMemcpyHtoDAsync). Keep `src` unchanged until
 * moe_cuda_synchronize(stream) returned: the driver stages pageable memory
 * before it returns, but reads page-locked memory later. Returns MOE_OK,
 * MOE_ERROR_NULL_ARGUMENT, MOE_ERROR_BAD_SIZE (bytes < 0) or MOE_ERROR_CUDA
 * (with moe_last_error set). */
int32_t moe_cuda_memcpy_to_device(void *dst, const void *src, int64_t bytes,
                                  void *stream);

/* Copies `bytes` bytes from device memory `src` to host memory `dst`, ordered
 * on `stream` (cuMemcpyDtoHAsync): `dst` holds the data once
 * moe_cuda_synchronize(stream) returned. Status codes as
 * moe_cuda_memcpy_to_device. */
int32_t moe_cuda_memcpy_to_host(void *dst, const void *src, int64_t bytes,
                                void *stream);

/* Waits until the work queued on `stream` is done. Returns MOE_OK or
 * MOE_ERROR_CUDA: errors of earlier kernels (a faulting kernel) surface
 * here. */
int32_t moe_cuda_synchronize(void *stream);

/* Scratch memory of --target=cuda calls comes from a memory pool per device
 * that this copy of the runtime creates on first use (cuMemPoolCreate), not
 * from the device's default pool, whose settings other libraries share. A
 * call frees its scratch on its stream; the pool keeps freed memory
 * reserved, up to the cache limit, so the next call reuses it instead of
 * mapping memory again. Above the limit, the driver hands memory back at the
 * next synchronisation. */

/* Sets the cache limit of every device's pool, existing and future: the
 * bytes of device memory a pool keeps reserved across synchronisations
 * (CU_MEMPOOL_ATTR_RELEASE_THRESHOLD). bytes < 0: no limit (the default, as
 * a caching allocator); 0: hand everything back at each synchronisation.
 * Returns MOE_OK, or MOE_ERROR_CUDA (moe_last_error says why) when the driver
 * refused the setting for an existing pool; the new limit is still recorded
 * for later pools. */
int32_t moe_cuda_set_scratch_cache_limit(int64_t bytes);

/* The cache limit of moe_cuda_set_scratch_cache_limit (-1: none). */
int64_t moe_cuda_get_scratch_cache_limit(void);

/* Hands the scratch memory the pools hold but no call uses back to the device
 * (cuMemPoolTrimTo). Memory of queued frees is only free once their stream
 * got there: synchronise first to release all. Returns MOE_OK (also when no
 * pool exists yet) or MOE_ERROR_CUDA. */
int32_t moe_cuda_trim_scratch(void);

/* The bytes of device memory the runtime's pools hold now, in use or cached
 * (CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, over all devices); 0 before the
 * first allocation, -1 on a driver error (MOE_ERROR_CUDA recorded). */
int64_t moe_cuda_scratch_reserved(void);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_H */
