/* lib/dataset.c — the in-memory n x dim data set and its shuffled split. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/dataset.h"

nf_dataset *nf_dataset_new(size_t n, size_t dim)
{
  if (n == 0 || dim == 0) {
    nf_fail(NF_EINVAL, "nf_dataset_new: n = %zu and dim = %zu must both be positive", n, dim);
    return NULL;
  }
  size_t nd;
  if (nf_count_doubles("nf_dataset_new", "the values", n, dim, &nd)) return NULL;
  nf_dataset *ds = malloc(sizeof *ds);
  double *x = nf_dalloc(nd);
  if (!ds || !x) {
    free(ds);
    free(x);
    nf_fail(NF_ENOMEM, "nf_dataset_new: out of memory for %zu x %zu values", n, dim);
    return NULL;
  }
  *ds = (nf_dataset){.n = n, .dim = dim, .x = x};
  return ds;
}

nf_dataset *nf_dataset_view(size_t n, size_t dim, double *x)
{
  if (n == 0 || dim == 0 || !x) {
    nf_fail(NF_EINVAL, "nf_dataset_view: n = %zu and dim = %zu must both be positive and x not NULL",
            n, dim);
    return NULL;
  }
  nf_dataset *ds = malloc(sizeof *ds);
  if (!ds) {
    nf_fail(NF_ENOMEM, "nf_dataset_view: out of memory");
    return NULL;
  }
  *ds = (nf_dataset){.n = n, .dim = dim, .x = x, .is_view = 1};
  return ds;
}

void nf_dataset_free(nf_dataset *ds)
{
  if (!ds) return;
  if (!ds->is_view) free(ds->x);
  free(ds);
}

/* Copies rows idx[0..n) of src into a new data set (NULL with nf_errmsg on no memory). */
static nf_dataset *gather_rows(const nf_dataset *src, size_t n, const size_t *idx)
{
  nf_dataset *out = nf_dataset_new(n, src->dim);
  if (!out) return NULL;
  size_t d = src->dim;
  for (size_t i = 0; i < n; i++) memcpy(out->x + i * d, src->x + idx[i] * d, d * sizeof *out->x);
  return out;
}

nf_status nf_dataset_split(const nf_dataset *ds, double frac, nf_rng *rng,
                           nf_dataset **first, nf_dataset **second)
{
  if (!ds || !ds->x || !rng || !first || !second)
    return nf_fail(NF_EINVAL, "nf_dataset_split: NULL argument");
  double k_real = round(frac * (double)ds->n);
  if (!(k_real >= 1 && k_real <= (double)ds->n - 1))
    return nf_fail(NF_EINVAL,
                   "nf_dataset_split: frac = %g of n = %zu rows leaves a part empty", frac,
                   ds->n);
  size_t k = (size_t)k_real;
  size_t *idx = malloc(ds->n * sizeof *idx);
  if (!idx) return nf_fail(NF_ENOMEM, "nf_dataset_split: out of memory for %zu indices", ds->n);
  for (size_t i = 0; i < ds->n; i++) idx[i] = i;
  nf_rng_shuffle(rng, ds->n, idx);
  nf_dataset *a = gather_rows(ds, k, idx);
  nf_dataset *b = a ? gather_rows(ds, ds->n - k, idx + k) : NULL;
  free(idx);
  if (!b) {
    nf_dataset_free(a);
    return NF_ENOMEM;
  }
  *first = a;
  *second = b;
  return NF_OK;
}
