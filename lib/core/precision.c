/* lib/core/precision.c — names and unit roundoff of the network arithmetic. */
#include <float.h>
#include "nflow/config.h"
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

/* Key "precision" = "single"; nothing for double (files without it are double). */
nf_status nf_precision_save(nf_config *cfg, nf_precision precision)
{
  return precision == NF_PRECISION_DOUBLE ? NF_OK
                                          : nf_config_set_string(cfg, "precision",
                                                                 nf_precision_name(precision));
}

/* Key "precision" if present (else double); NF_EFORMAT on another value. */
nf_status nf_precision_load(const nf_config *cfg, nf_precision *precision)
{
  const char *name = NULL;
  *precision = NF_PRECISION_DOUBLE;
  if (!nf_config_has(cfg, "precision")) return NF_OK;
  nf_status st = nf_config_get_string(cfg, "precision", &name);
  if (st) return st;
  if (nf_precision_parse(name, precision))
    return nf_fail(NF_EFORMAT, "config key 'precision': '%s' is not 'double' or 'single'", name);
  return NF_OK;
}

nf_status nf_check_precision(const char *fn, nf_precision precision)
{
  return (unsigned)precision <= NF_PRECISION_SINGLE
           ? NF_OK
           : nf_fail(NF_EINVAL, "%s: unknown precision %d", fn, (int)precision);
}
