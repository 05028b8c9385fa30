//===- thread_pool_test.cpp - checks of the runtime's parallel loops ------===//
//
// Links the static runtime. Prints one line per check for FileCheck (see
// thread-pool.test) and "FAILED: ..." for every failed expectation; exits 1
// if any failed. `--default` checks only the thread-count settings;
// `--dlclose <libmoe_runtime.so>` instead loads a second copy of the runtime,
// runs a loop on its workers and unloads it.
//
//===----------------------------------------------------------------------===//

#include "moe-c/moe_runtime.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <memory>
#include <mutex>
#include <sched.h>
#include <set>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {
int failures = 0;

void expect(bool ok, const char *what, long long got, long long want) {
  if (ok)
    return;
  ++failures;
  std::printf("FAILED: %s (got %lld, want %lld)\n", what, got, want);
}

int affinityCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0)
    return -1;
  return CPU_COUNT(&set);
}

void sleepMs(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

/// Counts the runs of each item and the threads they ran on.
struct Tally {
  explicit Tally(int64_t n) : runs(new std::atomic<int>[n]), size(n) {
    for (int64_t i = 0; i < n; ++i)
      runs[i].store(0);
  }
  void record(int64_t i) {
    runs[i].fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mutex);
    threads.insert(std::this_thread::get_id());
  }
  /// The number of items that did not run exactly once.
  int64_t wrong() const {
    int64_t bad = 0;
    for (int64_t i = 0; i < size; ++i)
      bad += runs[i].load() != 1;
    return bad;
  }
  std::unique_ptr<std::atomic<int>[]> runs;
  int64_t size;
  int sleepMsPerItem = 0;
  std::mutex mutex;
  std::set<std::thread::id> threads;
};

void tallyItem(void *ctx, int64_t i) {
  auto *tally = static_cast<Tally *>(ctx);
  if (tally->sleepMsPerItem)
    sleepMs(tally->sleepMsPerItem);
  tally->record(i);
}

/// Distinct threads that ran 32 sleeping items: sleeping lets every worker
/// take some however few cores the machine has.
size_t threadsUsed() {
  Tally tally(32);
  tally.sleepMsPerItem = 2;
  moe_rt_parallel_for(32, tallyItem, &tally);
  expect(tally.wrong() == 0, "sleeping items run once", tally.wrong(), 0);
  return tally.threads.size();
}

void checkCoverage() {
  const int64_t sizes[] = {0, 1, 2, 7, 1000, 100000};
  for (int32_t threads : {1, 2, 3, 8}) {
    expect(moe_set_num_threads(threads) == threads, "set returns the count",
           moe_get_num_threads(), threads);
    expect(moe_get_num_threads() == threads, "get after set",
           moe_get_num_threads(), threads);
    std::printf("threads %d: n =", threads);
    for (int64_t n : sizes) {
      Tally tally(n);
      moe_rt_parallel_for(n, tallyItem, &tally);
      expect(tally.wrong() == 0, "every item runs exactly once", tally.wrong(),
             0);
      expect(static_cast<int32_t>(tally.threads.size()) <= threads,
             "no more threads than set", tally.threads.size(), threads);
      std::printf(" %lld", static_cast<long long>(n));
    }
    size_t used = threadsUsed();
    expect(used <= static_cast<size_t>(threads), "sleeping items: threads",
           used, threads);
    expect(threads == 1 || used >= 2, "sleeping items spread over threads",
           used, threads);
    std::printf(" ok\n");
  }
  // Shrinking joins the surplus workers.
  moe_set_num_threads(2);
  size_t used = threadsUsed();
  expect(used == 2, "8 -> 2 threads", used, 2);
  std::printf("resize 8 -> 2: %zu threads\n", used);
}

struct Nested {
  static constexpr int64_t kOuter = 16, kInner = 100;
  Tally tally{kOuter * kInner};
  std::atomic<int> foreignInner{0};
};

void nestedOuter(void *ctx, int64_t outer) {
  auto *nested = static_cast<Nested *>(ctx);
  struct Inner {
    Nested *nested;
    int64_t outer;
    std::thread::id thread;
  } inner{nested, outer, std::this_thread::get_id()};
  moe_rt_parallel_for(
      Nested::kInner,
      [](void *ctx, int64_t i) {
        auto *inner = static_cast<Inner *>(ctx);
        // Nested loops run inline on the thread of their outer item.
        if (std::this_thread::get_id() != inner->thread)
          inner->nested->foreignInner.fetch_add(1);
        inner->nested->tally.record(inner->outer * Nested::kInner + i);
      },
      &inner);
}

void checkNested() {
  moe_set_num_threads(4);
  Nested nested;
  moe_rt_parallel_for(Nested::kOuter, nestedOuter, &nested);
  expect(nested.tally.wrong() == 0, "nested items run once",
         nested.tally.wrong(), 0);
  expect(nested.foreignInner.load() == 0, "nested items inline",
         nested.foreignInner.load(), 0);
  std::printf("nested: %lld items ok\n",
              static_cast<long long>(nested.tally.size));
}

void checkConcurrent() {
  moe_set_num_threads(4);
  std::atomic<int64_t> wrong{0};
  auto caller = [&wrong] {
    for (int round = 0; round < 200; ++round) {
      Tally tally(1000 + round);
      moe_rt_parallel_for(tally.size, tallyItem, &tally);
      wrong += tally.wrong();
    }
  };
  std::thread first(caller), second(caller);
  first.join();
  second.join();
  expect(wrong.load() == 0, "two callers: items run once", wrong.load(), 0);
  std::printf("concurrent callers: ok\n");

  // Resizing while another thread's loops run: deferred, never a deadlock.
  std::atomic<bool> stop{false};
  std::thread looper([&] {
    while (!stop.load()) {
      Tally tally(5000);
      moe_rt_parallel_for(tally.size, tallyItem, &tally);
      wrong += tally.wrong();
    }
  });
  for (int round = 0; round < 200; ++round)
    moe_set_num_threads(1 + round % 5);
  stop.store(true);
  looper.join();
  expect(wrong.load() == 0, "resize under load: items run once", wrong.load(),
         0);
  std::printf("resize while running: ok\n");
}

/// Short loops back to back, on two contexts in turn: a helper still
/// leaving one loop must not take an item of the next (with the old body's
/// context, or skipping it). Such a mix-up shows as a stale or missed item,
/// or as a loop that never finishes.
struct BackToBack {
  std::atomic<int> runs[8];
  int round = 0;
};
std::atomic<int> currentRound{-1};
std::atomic<int64_t> staleItems{0};

void backToBackItem(void *ctx, int64_t i) {
  for (volatile int spin = 0; spin < 300; ++spin) {
  }
  auto *loop = static_cast<BackToBack *>(ctx);
  if (loop->round != currentRound.load())
    staleItems.fetch_add(1);
  loop->runs[i].fetch_add(1);
}

void checkBackToBack() {
  moe_set_num_threads(4);
  static BackToBack loops[2];
  int64_t wrong = 0;
  for (int round = 0; round < 200000; ++round) {
    BackToBack &loop = loops[round & 1];
    int n = 2 + round % 7;
    for (std::atomic<int> &runs : loop.runs)
      runs.store(0);
    loop.round = round;
    currentRound.store(round);
    moe_rt_parallel_for(n, backToBackItem, &loop);
    for (int i = 0; i < 8; ++i)
      wrong += loop.runs[i].load() != (i < n ? 1 : 0);
  }
  expect(wrong == 0, "back to back: items run once", wrong, 0);
  expect(staleItems.load() == 0, "back to back: stale items", staleItems.load(),
         0);
  std::printf("back to back: ok\n");
}

struct Skewed {
  std::atomic<int> done{0};
  std::atomic<int> itemsOnSlowThread{0};
  std::thread::id slowThread;
  std::mutex mutex;
  std::vector<std::thread::id> ranOn = std::vector<std::thread::id>(64);
};

void skewedItem(void *ctx, int64_t i) {
  auto *skewed = static_cast<Skewed *>(ctx);
  sleepMs(i == 0 ? 500 : 1);
  skewed->ranOn[i] = std::this_thread::get_id();
  skewed->done.fetch_add(1);
}

void checkSkewed() {
  moe_set_num_threads(4);
  Skewed skewed;
  auto start = std::chrono::steady_clock::now();
  moe_rt_parallel_for(64, skewedItem, &skewed);
  double ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - start)
                  .count();
  expect(skewed.done.load() == 64, "skewed items done", skewed.done.load(), 64);
  // Items are handed out one at a time: the thread stuck on item 0 takes no
  // other, as the other three finish the 63 short ones well within 500 ms.
  int onSlow = 0;
  for (const std::thread::id &id : skewed.ranOn)
    onSlow += id == skewed.ranOn[0];
  expect(onSlow == 1, "items on the thread of the slow item", onSlow, 1);
  expect(ms < 2000, "skewed loop time (ms)", static_cast<long long>(ms), 500);
  std::printf("skewed: ok\n");
}

void checkSettings() {
  int32_t defaults = moe_set_num_threads(0);
  expect(moe_get_num_threads() == defaults, "get after set(0)",
         moe_get_num_threads(), defaults);
  expect(moe_set_num_threads(5) == 5, "set(5)", moe_get_num_threads(), 5);
  expect(moe_set_num_threads(-3) == defaults, "set(-3) is the default",
         moe_get_num_threads(), defaults);
  std::printf("default threads: %d (affinity: %d)\n", defaults,
              affinityCores());
  size_t used = threadsUsed();
  expect(used <= static_cast<size_t>(defaults), "default: threads used", used,
         defaults);
}

void checkFork() {
  moe_set_num_threads(4);
  Tally warmUp(1000);
  moe_rt_parallel_for(warmUp.size, tallyItem, &warmUp);
  // The child has none of the parent's workers: its loops must not wait for
  // them. A hang ends in SIGALRM.
  pid_t child = fork();
  if (child == 0) {
    alarm(10);
    Tally tally(1000);
    moe_rt_parallel_for(tally.size, tallyItem, &tally);
    size_t used = threadsUsed();
    _exit(tally.wrong() == 0 && used >= 2 ? 0 : 1);
  }
  int status = 0;
  expect(child > 0 && waitpid(child, &status, 0) == child, "fork", 0, 1);
  expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "loops in a child",
         status, 0);
  std::printf("fork: ok\n");
}

/// The threads of this process, from /proc/self/status.
int processThreads() {
  FILE *status = std::fopen("/proc/self/status", "r");
  if (!status)
    return -1;
  char line[256];
  int threads = -1;
  while (std::fgets(line, sizeof(line), status))
    if (std::sscanf(line, "Threads: %d", &threads) == 1)
      break;
  std::fclose(status);
  return threads;
}

int checkDlclose(const char *path) {
  int threadsBefore = processThreads();
  void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    std::printf("FAILED: dlopen: %s\n", dlerror());
    return 1;
  }
  auto setThreads = reinterpret_cast<int32_t (*)(int32_t)>(
      dlsym(library, "moe_set_num_threads"));
  auto parallelFor =
      reinterpret_cast<void (*)(int64_t, void (*)(void *, int64_t), void *)>(
          dlsym(library, "moe_rt_parallel_for"));
  if (!setThreads || !parallelFor) {
    std::printf("FAILED: dlsym\n");
    return 1;
  }
  int32_t threads = setThreads(4);
  expect(threads == 4, "set in the loaded copy", threads, 4);
  Tally tally(10000);
  parallelFor(tally.size, tallyItem, &tally);
  expect(tally.wrong() == 0, "loaded copy: items run once", tally.wrong(), 0);
  expect(processThreads() == threadsBefore + 3, "threads while loaded",
         processThreads(), threadsBefore + 3);
  // Its workers wait in the library's code: unloading must join them first.
  expect(dlclose(library) == 0, "dlclose", 1, 0);
  bool unloaded = dlopen(path, RTLD_NOW | RTLD_NOLOAD) == nullptr;
  expect(unloaded, "the copy is unloaded", 0, 1);
  expect(processThreads() == threadsBefore, "threads after dlclose",
         processThreads(), threadsBefore);
  std::printf("dlclose: ok\n");
  return failures ? 1 : 0;
}
} // namespace

int main(int argc, char **argv) {
  // A deadlock fails the test (SIGALRM) instead of hanging the suite.
  alarm(300);
  if (argc == 3 && std::strcmp(argv[1], "--dlclose") == 0)
    return checkDlclose(argv[2]);
  if (argc == 2 && std::strcmp(argv[1], "--default") == 0) {
    checkSettings();
    return failures ? 1 : 0;
  }
  // Before anything sets a count, so the default comes from the environment.
  checkSettings();
  checkCoverage();
  checkNested();
  checkConcurrent();
  checkBackToBack();
  checkSkewed();
  checkFork();
  if (failures) {
    std::printf("%d FAILED\n", failures);
    return 1;
  }
  std::printf("PASS\n");
  return 0;
}
