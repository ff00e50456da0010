/* lib/core/limits.c — the readers' allocation cap (nf_set_alloc_limit). */
#include <stdatomic.h>
#include <stdint.h>

#include "internal.h"
#include "nflow/limits.h"

/* The cap in bytes, 0 for none; relaxed atomics suffice (no other data hangs on it). */
static atomic_size_t nf_limit_bytes;

void nf_set_alloc_limit(size_t bytes) { atomic_store_explicit(&nf_limit_bytes, bytes, memory_order_relaxed); }

size_t nf_alloc_limit(void) { return atomic_load_explicit(&nf_limit_bytes, memory_order_relaxed); }

size_t nf_alloc_room(void)
{
  size_t limit = nf_alloc_limit();
  return limit ? limit : SIZE_MAX;
}

nf_status nf_check_alloc(const char *path, size_t bytes)
{
  size_t limit = nf_alloc_limit();
  if (limit == 0 || bytes <= limit) return NF_OK;
  return nf_fail(NF_ENOMEM, "%s: needs %zu bytes, more than the allocation limit of %zu bytes",
                 path, bytes, limit);
}
