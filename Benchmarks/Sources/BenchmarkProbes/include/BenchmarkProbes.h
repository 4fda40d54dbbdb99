// Probes for the benchmarks, in C because they reach below Swift.
//
// Allocations: counts the process's allocations while counting is on, and reports the bytes the allocator
// has handed out: this program's malloc, calloc, realloc, posix_memalign, aligned_alloc and
// memalign interpose glibc's for the whole process (the Swift runtime included) and forward to
// glibc's own implementations.
#ifndef BENCHMARK_PROBES_H
#define BENCHMARK_PROBES_H

#include <stdint.h>

/// Starts counting allocations from zero.
void malloc_counter_start(void);
/// Stops counting; returns the allocations since `malloc_counter_start`.
uint64_t malloc_counter_stop(void);
/// Bytes in use from the allocator (small and mmap'd blocks), from glibc's mallinfo2.
uint64_t malloc_bytes_in_use(void);

/// Turns callgrind's collection on or off (run under `valgrind --tool=callgrind
/// --collect-atstart=no`); does nothing outside valgrind or when valgrind's headers were missing
/// at build time.
void callgrind_toggle_collect(void);

#endif
