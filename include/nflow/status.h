/* nflow/status.h — status codes and error messages. */
#ifndef NFLOW_STATUS_H
#define NFLOW_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Every fallible nflow function returns one of these; NF_OK is 0. */
typedef enum nf_status {
  NF_OK = 0,
  NF_EINVAL,     /* invalid argument: NULL pointer, n = 0, unknown option, out of range */
  NF_EDIM,       /* dimension mismatch between objects or arrays */
  NF_ENOMEM,     /* allocation failed */
  NF_ENONFINITE, /* NaN or Inf where a finite value is required */
  NF_EIO,        /* a file could not be opened, read or written */
  NF_EFORMAT,    /* a file or string is malformed */
  NF_ENOCONV,    /* an iterative solve (root finding, ODE) did not converge */
  NF_ESOLVER,    /* an ODE solver failed (step limit, step underflow, ...) */
  NF_ESTATE,     /* the object is not in a state that allows the call */
  NF_EDOMAIN     /* finite parameters that make a map singular or overflow */
} nf_status;

/* Short fixed name of a status code ("NF_OK", ...); never NULL. */
const char *nf_status_str(nf_status s);

/* Status of the last failure in the calling thread (NF_OK if none): how a
   constructor that returned NULL says why. */
nf_status nf_last_status(void);

/* Detail of the last failure in the calling thread ("" if none): which argument,
   which line and column, which time the solver reached. Valid until the next
   failing nflow call in the same thread. */
const char *nf_errmsg(void);

#ifdef __cplusplus
}
#endif
#endif
