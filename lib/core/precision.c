/* lib/core/precision.c — names and unit roundoff of the network arithmetic. */
#include <float.h>
#include "nflow/precision.h"
#include "internal.h"

static const char *const precision_names[] = {"double", "single"};

const char *nf_precision_name(nf_precision precision)
{
  return (unsigned)precision <= NF_PRECISION_SINGLE ? precision_names[precision] : "?";
}

nf_status nf_precision_parse(const char *name, nf_precision *precision)
{
  int i = 0;
  nf_status st = nf_parse_choice("precision", name, precision_names, 2, precision ? &i : NULL);
  if (st == NF_OK) *precision = (nf_precision)i;
  return st;
}

/* FLT_EPSILON for single, DBL_EPSILON otherwise. */
double nf_precision_epsilon(nf_precision precision)
{
  return precision == NF_PRECISION_SINGLE ? FLT_EPSILON : DBL_EPSILON;
}

void nf_to_float(size_t n, const double *in, float *out)
{
  for (size_t i = 0; i < n; i++) out[i] = (float)in[i];
}

void nf_add_float(size_t n, const float *in, double *out)
{
  for (size_t i = 0; i < n; i++) out[i] += in[i];
}
