/* lib/rng.c — xoshiro256** (Blackman & Vigna 2018) seeded through splitmix64,
   and counter-based noise from the splitmix64 finaliser. */
#include <math.h>

#include "internal.h"
#include "nflow/rng.h"

static const uint64_t golden = 0x9e3779b97f4a7c15ULL; /* 2^64 / golden ratio, odd */

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* The splitmix64 finaliser (Stafford's Mix13): a bijective avalanche of 64 bits. */
static uint64_t mix64(uint64_t z)
{
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* splitmix64 step x += golden, mix64(x): the recommended seeder for the xoshiro family. */
static uint64_t splitmix64(uint64_t *x) { return mix64(*x += golden); }

/* [0, 1) from the top 53 bits of u. */
static double unit53(uint64_t u) { return (double)(u >> 11) * 0x1.0p-53; }

void nf_rng_seed(nf_rng *rng, uint64_t seed)
{
  if (!rng) return;
  for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

uint64_t nf_rng_u64(nf_rng *rng)
{
  if (!rng) return 0;
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

void nf_rng_jump(nf_rng *rng)
{
  static const uint64_t jump[] = {0x180ec6d33cfd0abaULL, 0xd5a61266f0c9392cULL,
                                  0xa9582618e03fc9aaULL, 0x39abdc4529b1661cULL};
  if (!rng) return;
  uint64_t t[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4; i++)
    for (int b = 0; b < 64; b++) {
      if (jump[i] & (UINT64_C(1) << b))
        for (int k = 0; k < 4; k++) t[k] ^= rng->s[k];
      nf_rng_u64(rng);
    }
  for (int k = 0; k < 4; k++) rng->s[k] = t[k];
}

double nf_rng_uniform(nf_rng *rng) { return rng ? unit53(nf_rng_u64(rng)) : 0.0; }

double nf_rng_normal(nf_rng *rng)
{
  double u, v, s;
  if (!rng) return 0.0;
  do {
    u = 2.0 * nf_rng_uniform(rng) - 1.0;
    v = 2.0 * nf_rng_uniform(rng) - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  return u * sqrt(-2.0 * log(s) / s);
}

double nf_rng_rademacher(nf_rng *rng)
{
  if (!rng) return 0.0;
  return (nf_rng_u64(rng) >> 63) ? 1.0 : -1.0;
}

uint64_t nf_rng_below(nf_rng *rng, uint64_t n)
{
  /* Lemire 2019: multiply-shift with rejection of the biased low range. */
  if (!rng || n == 0) return 0;
  unsigned __int128 m = (unsigned __int128)nf_rng_u64(rng) * n;
  uint64_t low = (uint64_t)m;
  if (low < n) {
    uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = (unsigned __int128)nf_rng_u64(rng) * n;
      low = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

void nf_rng_normal_fill(nf_rng *rng, size_t n, double *out)
{
  if (!rng || !out) return;
  for (size_t i = 0; i < n; i++) out[i] = nf_rng_normal(rng);
}

void nf_rng_rademacher_fill(nf_rng *rng, size_t n, double *out)
{
  if (!rng || !out) return;
  for (size_t i = 0; i < n; i++) out[i] = nf_rng_rademacher(rng);
}

void nf_rng_shuffle(nf_rng *rng, size_t n, size_t *idx)
{
  if (!rng || !idx) return;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)nf_rng_below(rng, i);
    size_t t = idx[i - 1];
    idx[i - 1] = idx[j];
    idx[j] = t;
  }
}

static const char *const noise_names[] = {"normal", "rademacher", "uniform"};

uint64_t nf_noise_u64(uint64_t key, uint64_t counter)
{
  return mix64(mix64(key ^ (counter * golden)) ^ key);
}

uint64_t nf_noise_key(uint64_t seed, uint64_t stream)
{
  return nf_noise_u64(seed ^ 0x6e666c6f776b6579ULL /* "nflowkey" */, stream);
}

/* Entry number c of the noise `key` of a kind (known to be valid): uniform and
   Rademacher from counter c, normal by Box–Muller from counters 2c and 2c + 1
   (1 - u1 lies in (0, 1], so the log is finite). */
static double noise_entry(nf_noise_kind kind, uint64_t key, uint64_t c)
{
  switch (kind) {
  case NF_NOISE_RADEMACHER: return (nf_noise_u64(key, c) >> 63) ? 1.0 : -1.0;
  case NF_NOISE_UNIFORM: return unit53(nf_noise_u64(key, c));
  default: {
    double u1 = unit53(nf_noise_u64(key, 2 * c)), u2 = unit53(nf_noise_u64(key, 2 * c + 1));
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586477 * u2);
  }
  }
}

void nf_noise_fill(nf_noise_kind kind, uint64_t key, size_t row0, size_t n, size_t d,
                   double *out)
{
  if (!out || (unsigned)kind > NF_NOISE_UNIFORM) return;
  for (size_t i = 0; i < n; i++) {
    uint64_t base = ((uint64_t)row0 + i) * d;
    for (size_t j = 0; j < d; j++) out[i * d + j] = noise_entry(kind, key, base + j);
  }
}

const char *nf_noise_kind_name(nf_noise_kind kind)
{
  return (unsigned)kind < sizeof noise_names / sizeof *noise_names ? noise_names[kind] : "?";
}

nf_status nf_noise_kind_parse(const char *name, nf_noise_kind *kind)
{
  int i = 0;
  nf_status st = nf_parse_choice("noise kind", name, noise_names,
                                 sizeof noise_names / sizeof *noise_names, kind ? &i : NULL);
  if (st == NF_OK) *kind = (nf_noise_kind)i;
  return st;
}
