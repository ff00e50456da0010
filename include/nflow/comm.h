/* nflow/comm.h — a communicator as an ops table, for data-parallel training
   over several processes (MPI: nflow/mpi.h, libnflow-mpi) without the core
   library depending on any message-passing library, in the way SUNDIALS
   models its N_Vector operations.

   A group of `size` processes (ranks 0 .. size-1) each hold a copy of the
   flow and a shard of the data. The two collective operations must be called
   by every rank of the group, in the same order:

   - sum(v, n, user): replaces v[0..n) on every rank with the elementwise sum
     over ranks, bit-identical on every rank and in a fixed order (rank 0's
     operand + rank 1's + ...), so results do not depend on timing;
   - bcast(buf, bytes, root, user): copies root's buf to every rank's.

   Each returns NF_OK or a status with nf_errmsg set; it never aborts or prints.

   nf_comm_agree turns each rank's own status into one agreed status, so that
   every rank stops alike when any fails: NF_OK on every rank if every rank
   passed NF_OK, else on every rank the status and message of the lowest rank
   that failed. */
#ifndef NFLOW_COMM_H
#define NFLOW_COMM_H

#include <stddef.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_comm {
  size_t rank, size; /* this process's rank in [0, size) and the group's size (>= 1) */
  nf_status (*sum)(double *v, size_t n, void *user);                   /* in place, rank order */
  nf_status (*bcast)(void *buf, size_t bytes, size_t root, void *user); /* root's buf to all */
  void *user;                                                          /* passed to both */
} nf_comm;

/* Collective. The agreed status of the ranks' statuses st (see above): NF_OK if
   all are NF_OK, else the lowest failing rank's status, with its nf_errmsg on
   every rank. A failure of the communicator itself is returned as is. */
nf_status nf_comm_agree(const nf_comm *comm, nf_status st);

/* Collective. Sums v[0..n) over the ranks (as comm->sum) and agrees on the
   ranks' statuses st at the same time (one reduction): v must have room for
   n + comm->size doubles (the last size are used for the statuses). A rank
   whose st is not NF_OK contributes zeros. Returns the agreed status; v[0..n)
   holds the sum when it is NF_OK. */
nf_status nf_comm_sum_agree(const nf_comm *comm, nf_status st, double *v, size_t n);

/* NF_OK if comm is usable (non-NULL, both operations, size >= 1, rank < size),
   else NF_EINVAL naming fn. Local: no communication. */
nf_status nf_comm_check(const char *fn, const nf_comm *comm);

#ifdef __cplusplus
}
#endif
#endif
