/*===- moe_runtime.h - C ABI of the MoE-MLIR runtime ----------------------===*
 *
 * Generated layer entry points return one of these status codes; the message
 * of the last failure on the calling thread is kept by the runtime. The
 * runtime also runs the parallel loops of generated kernels on its threads.
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

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_H */
