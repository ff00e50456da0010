/* nflow/precision.h — the arithmetic a network pass runs in.

   NF_PRECISION_DOUBLE (the default) evaluates every network with dgemm in
   double. NF_PRECISION_SINGLE converts the weights to float once per call and
   evaluates the matrix products (sgemm) and activations in float; theta, the
   flow's states (the ODE state of a CNF included), log-determinants, gradients
   and every accumulation stay double. Single is about twice as fast and is
   what PyTorch peers (zuko, FFJORD) compute in; its results carry relative
   errors near 1e-7 per operation, so finite-difference checks need steps
   near 1e-3 and ODE tolerances have a higher floor (nf_ode_tolerance_floor). */
#ifndef NFLOW_PRECISION_H
#define NFLOW_PRECISION_H

#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_precision {
  NF_PRECISION_DOUBLE = 0,
  NF_PRECISION_SINGLE
} nf_precision;

/* "double", "single" ("?" for another value); nf_precision_parse reads them
   back (NF_EINVAL, *precision untouched, otherwise). */
const char *nf_precision_name(nf_precision precision);
nf_status nf_precision_parse(const char *name, nf_precision *precision);

/* The unit roundoff of the arithmetic: DBL_EPSILON or FLT_EPSILON (the
   double's for an unknown value). */
double nf_precision_epsilon(nf_precision precision);

#ifdef __cplusplus
}
#endif
#endif
