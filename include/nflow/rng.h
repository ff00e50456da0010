/* nflow/rng.h — seedable random numbers passed explicitly: a stateful stream
   (xoshiro256**) and stateless counter-based noise, whose every value is a
   function of (key, counter) alone and so does not depend on the workspace,
   the chunking of a batch or the thread that draws it. */
#ifndef NFLOW_RNG_H
#define NFLOW_RNG_H

#include <stddef.h>
#include <stdint.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Generator state: a value type (copy it to fork a stream); treat fields as private.
   Every nf_rng_* function is a no-op on a NULL generator: it returns 0 and leaves
   its outputs untouched. */
typedef struct nf_rng {
  uint64_t s[4];
} nf_rng;

/* Seed the state from one 64-bit seed through splitmix64 (Vigna). */
void nf_rng_seed(nf_rng *rng, uint64_t seed);

/* Advance by 2^128 draws: gives a non-overlapping stream for another worker. */
void nf_rng_jump(nf_rng *rng);

/* Next raw 64-bit output of xoshiro256** (Blackman & Vigna 2018). */
uint64_t nf_rng_u64(nf_rng *rng);

/* Uniform double in [0, 1) with 53 random bits. */
double nf_rng_uniform(nf_rng *rng);

/* Standard normal draw (Marsaglia polar method; deterministic for a seed). */
double nf_rng_normal(nf_rng *rng);

/* +1 or -1 with probability 1/2 each. */
double nf_rng_rademacher(nf_rng *rng);

/* Uniform integer in [0, n) without modulo bias (Lemire); 0 for n == 0. */
uint64_t nf_rng_below(nf_rng *rng, uint64_t n);

/* Fill out[0..n) with standard normal draws. */
void nf_rng_normal_fill(nf_rng *rng, size_t n, double *out);

/* Fill out[0..n) with Rademacher draws. */
void nf_rng_rademacher_fill(nf_rng *rng, size_t n, double *out);

/* Fisher–Yates shuffle of the index array idx[0..n). */
void nf_rng_shuffle(nf_rng *rng, size_t n, size_t *idx);

/* ---- counter-based noise ------------------------------------------------ */

typedef enum nf_noise_kind {
  NF_NOISE_NORMAL,     /* standard normal (Box–Muller) */
  NF_NOISE_RADEMACHER, /* +1 or -1 with probability 1/2 each */
  NF_NOISE_UNIFORM     /* uniform in [0, 1) with 53 random bits */
} nf_noise_kind;

/* The counter-th 64-bit value of the stream `key`: a function of (key, counter)
   only, two rounds of the splitmix64 finaliser (Stafford's Mix13) over
   key ^ (counter * golden ratio), the second keyed again so that streams differ. */
uint64_t nf_noise_u64(uint64_t key, uint64_t counter);

/* The key of stream `stream` (e.g. layer k of a flow) derived from a seed:
   nf_noise_u64 of (seed ^ a domain constant, stream), so distinct streams of a
   seed, and the same stream of distinct seeds, get independent keys. */
uint64_t nf_noise_key(uint64_t seed, uint64_t stream);

/* Fills out (n x d, row-major) with noise of `kind` for the global rows
   row0 .. row0 + n - 1: entry (i, j) depends only on (key, row0 + i, j, d), so
   filling rows [0, 100) at once equals filling [0, 40) and then [40, 100) with
   row0 = 40. With c = (row0 + i) d + j (mod 2^64): uniform from counter c;
   Rademacher from the top bit of counter c; normal by Box–Muller
   sqrt(-2 log(1 - u1)) cos(2 pi u2) from the 53-bit uniforms u1, u2 of counters
   2c and 2c + 1. An unknown kind or a NULL out leaves out untouched. */
void nf_noise_fill(nf_noise_kind kind, uint64_t key, size_t row0, size_t n, size_t d,
                   double *out);

/* "normal", "rademacher", "uniform"; "?" for an unknown kind. */
const char *nf_noise_kind_name(nf_noise_kind kind);

/* Parses the names of nf_noise_kind_name; NF_EINVAL (output untouched) otherwise. */
nf_status nf_noise_kind_parse(const char *name, nf_noise_kind *kind);

#ifdef __cplusplus
}
#endif
#endif
