#ifndef LIFEGUARD_TIMESTAMP_COUNTER_H
#define LIFEGUARD_TIMESTAMP_COUNTER_H

#include <stdint.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

/// Whether this build can read the processor's timestamp counter.
static inline int lifeguard_has_timestamp_counter(void) {
#if defined(__x86_64__)
    return 1;
#else
    return 0;
#endif
}

/// The processor's timestamp counter (RDTSC): a few nanoseconds to read, where a call to
/// clock_gettime costs 20-45 ns in a virtual machine. 0 where there is none.
static inline uint64_t lifeguard_timestamp_counter(void) {
#if defined(__x86_64__)
    return __rdtsc();
#else
    return 0;
#endif
}

#endif
