/* lib/core/comm.c — status agreement over an nf_comm (comm.h): each rank's
   status in its own slot of a summed vector, then the lowest failing rank
   broadcasts its message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/comm.h"

nf_status nf_comm_check(const char *fn, const nf_comm *comm)
{
  if (!comm) return nf_fail(NF_EINVAL, "%s: NULL communicator", fn);
  if (!comm->sum || !comm->bcast)
    return nf_fail(NF_EINVAL, "%s: the communicator has no %s operation", fn,
                   !comm->sum ? "sum" : "bcast");
  if (comm->size == 0 || comm->rank >= comm->size)
    return nf_fail(NF_EINVAL, "%s: rank %zu is not in [0, size %zu)", fn, comm->rank,
                   comm->size);
  return NF_OK;
}

/* The statuses slots[0..size) summed over ranks: the lowest failing rank's
   status, its message broadcast to every rank; NF_OK if none failed. */
static nf_status settle(const nf_comm *comm, const double *slots)
{
  size_t r = 0;
  while (r < comm->size && slots[r] == 0.0) r++;
  if (r == comm->size) return NF_OK;
  nf_status st = (nf_status)(int)slots[r];
  char msg[512];
  if (comm->rank == r) snprintf(msg, sizeof msg, "%s", nf_errmsg());
  nf_status cs = comm->bcast(msg, sizeof msg, r, comm->user);
  if (cs != NF_OK) return cs;
  msg[sizeof msg - 1] = '\0';
  if (comm->rank != r) nf_fail(st, "%s", msg);
  return st;
}

nf_status nf_comm_sum_agree(const nf_comm *comm, nf_status st, double *v, size_t n)
{
  double *slots = v + n;
  if (st != NF_OK) memset(v, 0, n * sizeof *v); /* a failed rank's numbers may be NaN */
  memset(slots, 0, comm->size * sizeof *slots);
  slots[comm->rank] = (double)st;
  nf_status cs = comm->sum(v, n + comm->size, comm->user);
  return cs != NF_OK ? cs : settle(comm, slots);
}

nf_status nf_comm_agree(const nf_comm *comm, nf_status st)
{
  nf_status cs = nf_comm_check("nf_comm_agree", comm);
  if (cs != NF_OK) return cs;
  double small[16], *v = comm->size <= 16 ? small : nf_dalloc(comm->size);
  if (!v) return nf_fail(NF_ENOMEM, "nf_comm_agree: out of memory");
  st = nf_comm_sum_agree(comm, st, v, 0);
  if (v != small) free(v);
  return st;
}
