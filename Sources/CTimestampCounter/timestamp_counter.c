// Everything is inline in include/timestamp_counter.h; a C target needs one source file.
#include "timestamp_counter.h"
