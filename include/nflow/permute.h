/* nflow/permute.h — fixed coordinate permutations x[i] = z[perm[i]] (inverse
   z[perm[i]] = x[i]); no parameters, log-det 0. Placed between coupling or
   autoregressive layers so every coordinate gets transformed. */
#ifndef NFLOW_PERMUTE_H
#define NFLOW_PERMUTE_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif
/* perm must be a permutation of 0..dim-1 (copied); NULL (with nf_errmsg naming
   the first out-of-range or repeated entry) otherwise, or on dim == 0. */
nf_layer *nf_permute_new(size_t dim, const size_t *perm);
/* x[i] = z[dim-1-i]. */
nf_layer *nf_permute_reverse_new(size_t dim);

/* The same under its 0.1 name; deprecated: use nf_permute_reverse_new. */
nf_layer *nf_reverse_new(size_t dim);
/* A uniformly random permutation drawn from rng (Fisher-Yates); NULL if rng is NULL. */
nf_layer *nf_permute_random_new(size_t dim, nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
