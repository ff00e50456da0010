/* nflow/mpi.h — an nf_comm (comm.h) over an MPI communicator, from
   libnflow-mpi (pkg-config nflow-mpi; built when configure finds MPI).

   sum is MPI_Allreduce with a user-defined NON-commutative operation that
   adds doubles, so MPI combines the operands in rank order and every rank
   gets the same bits whatever the timing; bcast is MPI_Bcast. The
   communicator is duplicated (MPI_Comm_dup, so nflow's messages never mix
   with the caller's) and set to MPI_ERRORS_RETURN: an MPI failure comes back
   as NF_EIO with MPI's error string, never as an abort or a print. MPI must
   be initialised (MPI_Init) before nf_comm_mpi_new and finalised after
   nf_comm_mpi_free. */
#ifndef NFLOW_MPI_H
#define NFLOW_MPI_H

#include <mpi.h>
#include "nflow/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collective over mc. A communicator over a duplicate of mc: rank and size
   are mc's. NULL (with nf_errmsg) if MPI is not initialised, mc is
   MPI_COMM_NULL, MPI fails or there is no memory. */
nf_comm *nf_comm_mpi_new(MPI_Comm mc);

/* Collective. Frees the duplicate and the object; NULL is a no-op. */
void nf_comm_mpi_free(nf_comm *comm);

#ifdef __cplusplus
}
#endif
#endif
