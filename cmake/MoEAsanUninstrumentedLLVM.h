/*===- MoEAsanUninstrumentedLLVM.h - ASan beside an uninstrumented LLVM --===*/
/*
 * Force-included (-include) into every file of an ASan build (MOE_SANITIZE).
 *
 * LLVM's headers poison and unpoison the memory of BumpPtrAllocator, Recycler
 * and json::Value when the including file is compiled with ASan. libMLIR.so
 * and libLLVM.so are not, and share those allocators with our code (MLIR's
 * StorageUniquer allocates attributes from both): a slab our inlined copy of
 * BumpPtrAllocator poisoned is then handed out by libMLIR's copy, which does
 * not unpoison it, and the next memmove into it is a false use-after-poison.
 * Declaring the ASan interface first, then turning its region calls into no
 * ops, makes our copies behave like libMLIR's: the allocators are never
 * poisoned (ASan still checks every malloc'ed block and stack frame).
 */
#ifndef MOE_ASAN_UNINSTRUMENTED_LLVM_H
#define MOE_ASAN_UNINSTRUMENTED_LLVM_H
#include <sanitizer/asan_interface.h>
#define __asan_poison_memory_region(p, size) ((void)(p), (void)(size))
#define __asan_unpoison_memory_region(p, size) ((void)(p), (void)(size))
#endif
