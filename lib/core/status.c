/* lib/status.c — status names, the per-thread error detail, numeric helpers
   and the argument checks and vjp driver the bijectors share. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/layer_impl.h"
#include "nflow/version.h"

static _Thread_local char nf_last_error[512];
static _Thread_local nf_status nf_last_code;

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
  case NF_EDOMAIN: return "NF_EDOMAIN (parameters make the map singular)";
  }
  return "NF_? (unknown status)";
}

const char *nf_errmsg(void) { return nf_last_error; }

nf_status nf_last_status(void) { return nf_last_code; }

/* Records the message and status of a failure for the calling thread. */
static nf_status record_failure(nf_status status, const char *fmt, va_list ap)
{
  vsnprintf(nf_last_error, sizeof nf_last_error, fmt, ap);
  nf_last_code = status;
  return status;
}

nf_status nf_set_error(nf_status status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  record_failure(status, fmt, ap);
  va_end(ap);
  return status;
}

const char *nf_dir_name(nf_dir dir)
{
  return dir == NF_FORWARD ? "forward" : dir == NF_INVERSE ? "inverse" : "?";
}

const char *nf_version(void) { return NFLOW_VERSION_STRING; }

int nf_size_mul(size_t a, size_t b, size_t *out)
{
  if (b != 0 && a > SIZE_MAX / b) return 1;
  *out = a * b;
  return 0;
}

int nf_size_mul3(size_t a, size_t b, size_t c, size_t *out)
{
  size_t ab;
  return nf_size_mul(a, b, &ab) || nf_size_mul(ab, c, out);
}

int nf_size_add(size_t a, size_t b, size_t *out)
{
  if (a > SIZE_MAX - b) return 1;
  *out = a + b;
  return 0;
}

nf_status nf_count_doubles(const char *fn, const char *what, size_t a, size_t b, size_t *out)
{
  size_t n, bytes;
  if (nf_size_mul(a, b, &n) || nf_size_mul(n, sizeof(double), &bytes))
    return nf_fail(NF_EINVAL, "%s: %s (%zu x %zu doubles) overflows the address space", fn,
                   what, a, b);
  *out = n;
  return NF_OK;
}

void *nf_alloc_n(size_t n, size_t size)
{
  size_t bytes;
  if (nf_size_mul(n, size, &bytes)) return NULL;
  return malloc(bytes ? bytes : 1);
}

nf_status nf_parse_choice(const char *what, const char *name, const char *const *table,
                          size_t k, int *index)
{
  if (!name) return nf_fail(NF_EINVAL, "the %s name is NULL", what);
  if (!index) return nf_fail(NF_EINVAL, "the output for the %s '%s' is NULL", what, name);
  for (size_t i = 0; i < k; i++)
    if (strcmp(name, table[i]) == 0) {
      *index = (int)i;
      return NF_OK;
    }
  char choices[256] = "";
  for (size_t i = 0, len = 0; i < k && len < sizeof choices; i++)
    len += (size_t)snprintf(choices + len, sizeof choices - len, "%s%s", i ? ", " : "", table[i]);
  return nf_fail(NF_EINVAL, "unknown %s '%s' (expected %s)", what, name, choices);
}

/* 1 if one of v[0..n) is NaN or +-Inf (v - v is then NaN, else 0), branch-free
   so that the loop vectorises. */
NF_VECTOR_LOOP static int any_nonfinite(size_t n, const double *v)
{
  int bad = 0;
  for (size_t i = 0; i < n; i++) bad |= !(v[i] - v[i] == 0.0);
  return bad;
}

/* Screens blocks of 256 with any_nonfinite, then finds the entry in the first
   block that has one. */
size_t nf_first_nonfinite(size_t n, const double *v)
{
  for (size_t b = 0; b < n; b += 256) {
    size_t len = n - b < 256 ? n - b : 256;
    if (!any_nonfinite(len, v + b)) continue;
    for (size_t i = b; i < b + len; i++)
      if (!isfinite(v[i])) return i;
  }
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

static _Thread_local int nf_caller_fault;

void nf_mark_caller_fault(void) { nf_caller_fault = 1; }

int nf_take_caller_fault(void)
{
  int f = nf_caller_fault;
  nf_caller_fault = 0;
  return f;
}

nf_status nf_fail_prefixed(nf_status status, const char *prefix)
{
  char detail[sizeof nf_last_error];
  memcpy(detail, nf_last_error, sizeof detail);
  return nf_fail(status, "%s: %s", prefix, detail);
}

nf_status nf_check_dim(const char *fn, size_t dim)
{
  size_t bytes;
  if (dim == 0) return nf_fail(NF_EINVAL, "%s: dimension is 0", fn);
  if (nf_size_mul3(dim, NF_MAX_DOUBLES_PER_COORD, sizeof(double), &bytes))
    return nf_fail(NF_EINVAL, "%s: dimension %zu overflows the address space", fn, dim);
  return NF_OK;
}

nf_status nf_check_positive(const char *fn, const char *name, double value)
{
  if (value > 0 && isfinite(value)) return NF_OK;
  return nf_fail(NF_EINVAL, "%s: %s must be finite and > 0, got %g", fn, name, value);
}

double nf_log1p_or_ratio(double v, double ratio)
{
  return v > -0.5 ? log1p(v) : log(ratio);
}

double nf_dir_sign(nf_dir dir)
{
  return dir == NF_FORWARD ? 1.0 : -1.0;
}

void nf_logdet_add(size_t n, double *logdet, double value)
{
  for (size_t i = 0; logdet && i < n; i++) logdet[i] += value;
}

double nf_sum_or_zero(size_t n, const double *v)
{
  double s = 0;
  for (size_t i = 0; v && i < n; i++) s += v[i];
  return s;
}

void nf_vjp_rows(const nf_row_pullback *pb, nf_dir dir, size_t n, size_t d, const double *in,
                 const double *out, const double *g_out, const double *g_logdet, double *g_in,
                 double *v)
{
  for (size_t i = 0; i < n; i++) {
    const double *g_row = g_out + i * d;
    double g_l = g_logdet ? g_logdet[i] : 0.0;
    double *g_in_row = g_in ? g_in + i * d : NULL;
    if (dir == NF_FORWARD) {
      pb->pull(pb->self, in + i * d, g_row, g_l, 1.0, g_in_row);
      continue;
    }
    pb->inverse_cotangent(pb->self, out + i * d, g_row, g_l, v);
    pb->pull(pb->self, out + i * d, v, g_l, -1.0, NULL);
    for (size_t j = 0; g_in_row && j < d; j++) g_in_row[j] = v[j];
  }
}

nf_status nf_check_log_scales(const char *family, const char *what, size_t n, const double *v,
                              size_t first)
{
  for (size_t j = 0; j < n; j++)
    if (fabs(v[j]) > NF_MAX_LOG_SCALE)
      return nf_fail(NF_EDOMAIN, "%s: parameter %zu (%s[%zu]) = %g makes exp() over- or "
                     "underflow: the map would be singular (|%s| must be <= %g)", family,
                     first + j, what, j, v[j], what, NF_MAX_LOG_SCALE);
  return NF_OK;
}
