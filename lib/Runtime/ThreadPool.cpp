//===- ThreadPool.cpp - worker threads of generated parallel loops --------===//
//
// Generated kernels outline each parallel loop body into `body(ctx, i)` and
// call moe_rt_parallel_for. Persistent workers, started on the first parallel
// call, and the calling thread take items one at a time from a shared counter,
// so a skewed loop still balances. One loop runs on the pool at a time: a
// nested call, or a call while another thread's loop holds the pool, runs
// inline on its own thread.
//
// Kernels from `moe-compile --emit=shared` link this archive with the C
// compiler driver, so the runtime uses pthreads and libc only (no libstdc++:
// no std::thread, std::mutex, operator new or guarded function-local statics).
// std::atomic is header-only. Not OpenMP: libomp and torch's libgomp clash in
// one process.
//
//===----------------------------------------------------------------------===//

#include "moe-c/moe_runtime.h"

#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

namespace {
using LoopBody = void (*)(void *ctx, int64_t i);

// Set on the workers for good and on a caller while its loop runs on the
// pool: a moe_rt_parallel_for from inside a loop body runs inline.
thread_local bool insideParallelFor = false;

// How long an idle thread polls before it blocks: back-to-back loops of one
// kernel skip the futex round trip, and an idle pool sleeps within ~0.1 ms.
constexpr int kSpinIterations = 4096;

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// $MOE_NUM_THREADS as a positive int32, or 0 when unset or not one.
int32_t threadsFromEnvironment() {
  const char *text = std::getenv("MOE_NUM_THREADS");
  if (!text)
    return 0;
  char *end = nullptr;
  errno = 0;
  long long value = std::strtoll(text, &end, 10);
  if (end == text || errno != 0)
    return 0;
  while (std::isspace(static_cast<unsigned char>(*end)))
    ++end;
  if (*end != '\0' || value <= 0 || value > INT32_MAX)
    return 0;
  return static_cast<int32_t>(value);
}

/// The cores this process may run on (its affinity mask, which taskset,
/// cgroup cpusets and container limits narrow), at least 1.
int32_t usableCores() {
  // cpu_set_t holds 1024 CPUs; a larger machine needs a larger mask.
  for (int cpus = 1024; cpus <= (1 << 20); cpus *= 2) {
    cpu_set_t *set = CPU_ALLOC(cpus);
    if (!set)
      break;
    size_t size = CPU_ALLOC_SIZE(cpus);
    CPU_ZERO_S(size, set);
    int result = sched_getaffinity(0, size, set);
    int count = CPU_COUNT_S(size, set);
    int error = errno;
    CPU_FREE(set);
    if (result == 0)
      return count > 0 ? count : 1;
    if (error != EINVAL)
      break;
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 && online <= INT32_MAX ? static_cast<int32_t>(online) : 1;
}

/// The pool's state. Trivially destructible, so it outlives every static
/// destructor; PoolShutdown below joins the workers at exit and dlclose.
class ThreadPool {
public:
  int32_t numThreads() {
    int32_t requested = requestedThreads.load(std::memory_order_relaxed);
    return requested > 0 ? requested : defaultThreads();
  }

  int32_t setNumThreads(int32_t n) {
    requestedThreads.store(n > 0 ? n : 0, std::memory_order_relaxed);
    int32_t threads = numThreads();
    // Resize now if no loop runs; otherwise the next loop resizes. A loop
    // body (or a worker) calling this must not wait for its own loop.
    if (!insideParallelFor && acquirePool()) {
      if (workersWanted != threads - 1)
        stopWorkers();
      releasePool();
    }
    return threads;
  }

  void run(int64_t n, LoopBody body, void *ctx) {
    if (n <= 0)
      return;
    if (n == 1 || insideParallelFor) {
      runItems(body, ctx, n);
      return;
    }
    int32_t threads = numThreads();
    if (threads <= 1 || !acquirePool()) {
      runItems(body, ctx, n);
      return;
    }
    int32_t helpers = startWorkers(threads - 1);
    int32_t helping = n - 1 < helpers ? static_cast<int32_t>(n - 1) : helpers;
    if (helping == 0) {
      releasePool();
      runItems(body, ctx, n);
      return;
    }

    pthread_mutex_lock(&mutex);
    // Helpers of the previous loop that have not yet seen it run dry must
    // leave it before its item counter is reused.
    while (activeHelpers.load(std::memory_order_acquire) != 0)
      pthread_cond_wait(&done, &mutex);
    jobBody = body;
    jobCtx = ctx;
    jobSize = n;
    jobHelpers = helping;
    nextItem.store(0, std::memory_order_relaxed);
    completed.store(0, std::memory_order_relaxed);
    generation.fetch_add(1, std::memory_order_release);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mutex);

    insideParallelFor = true;
    int64_t ran = claimItems(body, ctx, n);
    insideParallelFor = false;

    // Done when every item is, not when every helper has woken: on a busy
    // machine a descheduled helper costs nothing, the caller takes its share.
    // The helpers' adds (acq_rel) publish their items' writes.
    if (completed.fetch_add(ran, std::memory_order_acq_rel) + ran < n) {
      for (int spin = 0; spin < kSpinIterations &&
                         completed.load(std::memory_order_acquire) < n;
           ++spin)
        cpuRelax();
      pthread_mutex_lock(&mutex);
      while (completed.load(std::memory_order_acquire) < n)
        pthread_cond_wait(&done, &mutex);
      pthread_mutex_unlock(&mutex);
    }
    releasePool();
  }

  /// At exit or dlclose: the workers run code of this image, so they must be
  /// gone before it is unmapped. Loops after this run inline.
  void shutDown() {
    // exit() from inside a loop body cannot join its own loop's workers; nor
    // can anything join them while another thread's loop runs.
    if (insideParallelFor || !acquirePool())
      return;
    stopWorkers();
    std::free(workers);
    workers = nullptr;
    workerCapacity = 0;
    // The pool stays acquired for good.
  }

  /// In the child of fork(): only the forking thread exists. Forget the
  /// parent's workers and reset the locks, which one of them may have held.
  void resetAfterFork() {
    pthread_mutex_init(&mutex, nullptr);
    pthread_cond_init(&wake, nullptr);
    pthread_cond_init(&done, nullptr);
    workerCount = 0;
    workersWanted = 0;
    stopping = false;
    activeHelpers.store(0, std::memory_order_relaxed);
    // A loop that forked from its body: the items of the parent's helpers are
    // not the child's to wait for.
    completed.store(jobSize, std::memory_order_relaxed);
    // The forking loop body keeps its loop's claim; otherwise the claim was
    // another thread's.
    if (!insideParallelFor)
      busy.store(false, std::memory_order_relaxed);
  }

private:
  static void *workerMain(void *arg);
  static void childAfterFork();

  bool acquirePool() {
    bool expected = false;
    return busy.compare_exchange_strong(
        expected, true, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void releasePool() { busy.store(false, std::memory_order_release); }

  static void runItems(LoopBody body, void *ctx, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      body(ctx, i);
  }

  /// Runs items until none is left; returns how many it ran.
  int64_t claimItems(LoopBody body, void *ctx, int64_t n) {
    int64_t ran = 0;
    for (int64_t i = nextItem.fetch_add(1, std::memory_order_relaxed); i < n;
         i = nextItem.fetch_add(1, std::memory_order_relaxed), ++ran)
      body(ctx, i);
    return ran;
  }

  int32_t defaultThreads() {
    int32_t cached = defaultThreadCount.load(std::memory_order_relaxed);
    if (cached > 0)
      return cached;
    int32_t count = threadsFromEnvironment();
    if (count <= 0)
      count = usableCores();
    // Racing first calls compute the same value; the first store wins.
    int32_t expected = 0;
    if (!defaultThreadCount.compare_exchange_strong(expected, count,
                                                    std::memory_order_relaxed))
      return expected;
    return count;
  }

  /// Makes `count` workers run (the pool is acquired); returns how many do,
  /// fewer if the system refuses threads (then it keeps those until the
  /// count changes rather than retry on every loop).
  int32_t startWorkers(int32_t count) {
    if (workersWanted == count)
      return workerCount;
    stopWorkers();
    workersWanted = count;
    if (!atForkRegistered) {
      pthread_atfork(nullptr, nullptr, childAfterFork);
      atForkRegistered = true;
    }
    if (count > workerCapacity) {
      void *grown = std::realloc(workers, sizeof(pthread_t) * count);
      if (!grown)
        return 0;
      workers = static_cast<pthread_t *>(grown);
      workerCapacity = count;
    }
    startGeneration = generation.load(std::memory_order_relaxed);
    // Workers inherit the mask: asynchronous signals (SIGINT, ...) go to the
    // application's threads, never to a worker.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    while (workerCount < count &&
           pthread_create(&workers[workerCount], nullptr, workerMain,
                          reinterpret_cast<void *>(
                              static_cast<intptr_t>(workerCount))) == 0)
      ++workerCount;
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return workerCount;
  }

  /// Joins every worker (the pool is acquired, so none has a job).
  void stopWorkers() {
    workersWanted = 0;
    if (workerCount == 0)
      return;
    pthread_mutex_lock(&mutex);
    stopping = true;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mutex);
    for (int32_t w = 0; w < workerCount; ++w)
      pthread_join(workers[w], nullptr);
    workerCount = 0;
    stopping = false;
  }

  void workerLoop(int32_t index) {
    insideParallelFor = true;
    uint64_t seen = startGeneration;
    pthread_mutex_lock(&mutex);
    for (;;) {
      pthread_mutex_unlock(&mutex);
      for (int spin = 0; spin < kSpinIterations &&
                         generation.load(std::memory_order_acquire) == seen;
           ++spin)
        cpuRelax();
      pthread_mutex_lock(&mutex);
      while (!stopping && generation.load(std::memory_order_relaxed) == seen)
        pthread_cond_wait(&wake, &mutex);
      if (stopping)
        break;
      // Only the latest loop matters: the ones a worker slept through were
      // finished without it.
      seen = generation.load(std::memory_order_relaxed);
      if (index >= jobHelpers)
        continue;
      LoopBody body = jobBody;
      void *ctx = jobCtx;
      int64_t n = jobSize;
      activeHelpers.fetch_add(1, std::memory_order_relaxed);
      pthread_mutex_unlock(&mutex);
      int64_t ran = claimItems(body, ctx, n);
      pthread_mutex_lock(&mutex);
      bool lastItems =
          ran > 0 &&
          completed.fetch_add(ran, std::memory_order_acq_rel) + ran >= n;
      bool lastHelper =
          activeHelpers.fetch_sub(1, std::memory_order_acq_rel) == 1;
      if (lastItems || lastHelper)
        pthread_cond_signal(&done);
    }
    pthread_mutex_unlock(&mutex);
  }

  // Thread count: requestedThreads (0: the default, computed once).
  std::atomic<int32_t> requestedThreads{0};
  std::atomic<int32_t> defaultThreadCount{0};

  // Held by the one caller whose loop runs on the pool, or who resizes it;
  // the worker array below belongs to it.
  std::atomic<bool> busy{false};
  pthread_t *workers = nullptr;
  int32_t workerCount = 0;
  int32_t workersWanted = 0;
  int32_t workerCapacity = 0;
  uint64_t startGeneration = 0;
  bool atForkRegistered = false;

  // The job hand-off: a new generation under `mutex` announces a job.
  pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
  pthread_cond_t done = PTHREAD_COND_INITIALIZER;
  bool stopping = false;
  std::atomic<uint64_t> generation{0};
  LoopBody jobBody = nullptr;
  void *jobCtx = nullptr;
  int64_t jobSize = 0;
  int32_t jobHelpers = 0;
  std::atomic<int64_t> nextItem{0};
  // Items finished, and helpers inside the current loop's claim loop.
  std::atomic<int64_t> completed{0};
  std::atomic<int32_t> activeHelpers{0};
};

ThreadPool pool;

void *ThreadPool::workerMain(void *arg) {
  pool.workerLoop(static_cast<int32_t>(reinterpret_cast<intptr_t>(arg)));
  return nullptr;
}

void ThreadPool::childAfterFork() { pool.resetAfterFork(); }

// Runs at exit, and at dlclose of a shared library that embeds the runtime
// (glibc also drops the library's fork handler then).
struct PoolShutdown {
  ~PoolShutdown() { pool.shutDown(); }
} poolShutdown;
} // namespace

extern "C" void moe_rt_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i),
                                    void *ctx) {
  pool.run(n, fn, ctx);
}

extern "C" int32_t moe_set_num_threads(int32_t n) {
  return pool.setNumThreads(n);
}

extern "C" int32_t moe_get_num_threads(void) { return pool.numThreads(); }
