/* lib/status.c — status names, the per-thread error detail, numeric helpers. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static _Thread_local char nf_last_error[512];

const char *nf_status_str(nf_status s)
{
  switch (s) {
  case NF_OK: return "NF_OK";
  case NF_EINVAL: return "NF_EINVAL (invalid argument)";
  case NF_EDIM: return "NF_EDIM (dimension mismatch)";
  case NF_ENOMEM: return "NF_ENOMEM (out of memory)";
  case NF_ENONFINITE: return "NF_ENONFINITE (NaN or Inf value)";
  case NF_EIO: return "NF_EIO (input/output error)";
  case NF_EFORMAT: return "NF_EFORMAT (malformed input)";
  case NF_ENOCONV: return "NF_ENOCONV (no convergence)";
  case NF_ESOLVER: return "NF_ESOLVER (ODE solver failure)";
  case NF_ESTATE: return "NF_ESTATE (object not ready)";
  }
  return "NF_? (unknown status)";
}

const char *nf_errmsg(void) { return nf_last_error; }

nf_status nf_fail(nf_status status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(nf_last_error, sizeof nf_last_error, fmt, ap);
  va_end(ap);
  return status;
}

size_t nf_first_nonfinite(size_t n, const double *v)
{
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i])) return i;
  return n;
}

double nf_softplus(double x)
{
  return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

double nf_sigmoid(double x)
{
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}

double *nf_dalloc(size_t n)
{
  if (n == 0) n = 1;
  return calloc(n, sizeof(double));
}
