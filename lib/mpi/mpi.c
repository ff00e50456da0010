/* lib/mpi/mpi.c — nf_comm over MPI (nflow/mpi.h): an order-fixed all-reduce
   by a non-commutative user operation, and MPI_Bcast. */
#include <stdlib.h>

#include "nflow/layer_impl.h"
#include "nflow/mpi.h"

/* The object behind an nf_comm: the public ops table first, then MPI's handles. */
typedef struct mpi_comm {
  nf_comm comm;
  MPI_Comm mc; /* the duplicate */
  MPI_Op add;  /* non-commutative double addition */
} mpi_comm;

/* inout[i] = in[i] + inout[i]: MPI calls a non-commutative operation with in
   from the lower ranks, so the sum is formed in rank order. */
static void add_in_order(void *in, void *inout, int *len, MPI_Datatype *type)
{
  (void)type;
  const double *a = in;
  double *b = inout;
  for (int i = 0; i < *len; i++) b[i] = a[i] + b[i];
}

/* NF_EIO with MPI's words for the failure of call, or NF_OK. */
static nf_status mpi_status(int rc, const char *call)
{
  if (rc == MPI_SUCCESS) return NF_OK;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
  msg[len] = '\0';
  return nf_set_error(NF_EIO, "nf_comm_mpi: %s failed: %s", call, len ? msg : "unknown error");
}

/* v <- the sum over ranks of v, in chunks that fit MPI's int counts. */
static nf_status mpi_sum(double *v, size_t n, void *user)
{
  const mpi_comm *m = user;
  for (size_t done = 0; done < n;) {
    size_t k = n - done < (size_t)1 << 30 ? n - done : (size_t)1 << 30;
    nf_status st = mpi_status(MPI_Allreduce(MPI_IN_PLACE, v + done, (int)k, MPI_DOUBLE, m->add,
                                            m->mc), "MPI_Allreduce");
    if (st != NF_OK) return st;
    done += k;
  }
  return NF_OK;
}

/* buf <- root's buf, in chunks that fit MPI's int counts. */
static nf_status mpi_bcast(void *buf, size_t bytes, size_t root, void *user)
{
  const mpi_comm *m = user;
  for (size_t done = 0; done < bytes;) {
    size_t k = bytes - done < (size_t)1 << 30 ? bytes - done : (size_t)1 << 30;
    nf_status st = mpi_status(MPI_Bcast((char *)buf + done, (int)k, MPI_BYTE, (int)root, m->mc),
                              "MPI_Bcast");
    if (st != NF_OK) return st;
    done += k;
  }
  return NF_OK;
}

nf_comm *nf_comm_mpi_new(MPI_Comm mc)
{
  int up = 0, rank = 0, size = 0;
  MPI_Initialized(&up);
  if (!up) {
    nf_set_error(NF_ESTATE, "nf_comm_mpi_new: MPI is not initialised (call MPI_Init first)");
    return NULL;
  }
  if (mc == MPI_COMM_NULL) {
    nf_set_error(NF_EINVAL, "nf_comm_mpi_new: MPI_COMM_NULL");
    return NULL;
  }
  mpi_comm *m = calloc(1, sizeof *m);
  if (!m) {
    nf_set_error(NF_ENOMEM, "nf_comm_mpi_new: out of memory");
    return NULL;
  }
  m->mc = MPI_COMM_NULL;
  m->add = MPI_OP_NULL;
  nf_status st = mpi_status(MPI_Comm_dup(mc, &m->mc), "MPI_Comm_dup");
  if (st == NF_OK)
    st = mpi_status(MPI_Comm_set_errhandler(m->mc, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  if (st == NF_OK) st = mpi_status(MPI_Comm_rank(m->mc, &rank), "MPI_Comm_rank");
  if (st == NF_OK) st = mpi_status(MPI_Comm_size(m->mc, &size), "MPI_Comm_size");
  if (st == NF_OK) st = mpi_status(MPI_Op_create(add_in_order, 0, &m->add), "MPI_Op_create");
  if (st != NF_OK) {
    nf_comm_mpi_free(&m->comm);
    return NULL;
  }
  m->comm = (nf_comm){.rank = (size_t)rank, .size = (size_t)size, .sum = mpi_sum,
                      .bcast = mpi_bcast, .user = m};
  return &m->comm;
}

void nf_comm_mpi_free(nf_comm *comm)
{
  if (!comm) return;
  mpi_comm *m = (mpi_comm *)comm; /* comm is the first member */
  if (m->add != MPI_OP_NULL) MPI_Op_free(&m->add);
  if (m->mc != MPI_COMM_NULL) MPI_Comm_free(&m->mc);
  free(m);
}
