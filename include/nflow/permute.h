/* nflow/permute.h — fixed coordinate permutations: x[i] = z[perm[i]]; log-det 0. */
#ifndef NFLOW_PERMUTE_H
#define NFLOW_PERMUTE_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif
/* perm must be a permutation of 0..dim-1 (copied); NULL (with nf_errmsg) otherwise. */
nf_layer *nf_permute_new(size_t dim, const size_t *perm);
/* x[i] = z[dim-1-i]. */
nf_layer *nf_reverse_new(size_t dim);
/* A uniformly random permutation drawn from rng. */
nf_layer *nf_permute_random_new(size_t dim, nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
