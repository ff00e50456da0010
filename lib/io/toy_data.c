/* lib/toy_data.c — the eight 2-D toy sets of FFJORD (Grathwohl et al. 2018,
   lib/toy_data.py), including the scikit-learn generators it calls (make_moons,
   make_circles, make_swiss_roll), re-expressed with nf_rng. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/dataset.h"

#define PI 3.14159265358979323846

/* Writes point p[0..2) of the toy set for arrangement slot `slot` of n. Sets that
   place points on a fixed arrangement (linspace angles, class labels) shuffle
   the slots; i.i.d. sets ignore them. */
typedef void toy_point_fn(size_t slot, size_t n, nf_rng *rng, double p[2]);

/* numpy.linspace(a, b, m, endpoint)[i]. */
static double linspace(double a, double b, size_t i, size_t m, int endpoint)
{
  size_t steps = endpoint ? m - 1 : m;
  return steps == 0 ? a : a + (b - a) * (double)i / (double)steps;
}

/* Adds N(0, sigma^2) noise to both coordinates. */
static void add_noise(double sigma, nf_rng *rng, double p[2])
{
  p[0] += sigma * nf_rng_normal(rng);
  p[1] += sigma * nf_rng_normal(rng);
}

/* x = (4 c_k + 0.5 e) / 1.414, c_k = (cos k pi/4, sin k pi/4), k ~ U{0..7}, e ~ N(0, I). */
static void eight_gaussians(size_t slot, size_t n, nf_rng *rng, double p[2])
{
  (void)slot, (void)n;
  double e0 = nf_rng_normal(rng), e1 = nf_rng_normal(rng);
  double a = PI / 4 * (double)nf_rng_below(rng, 8);
  p[0] = (4 * cos(a) + 0.5 * e0) / 1.414;
  p[1] = (4 * sin(a) + 0.5 * e1) / 1.414;
}

/* make_moons(noise 0.1) * 2 + (-1, -0.2): upper arc (cos t, sin t) for the first
   n/2 slots, lower arc (1 - cos t, 1/2 - sin t) for the rest, t = linspace(0, pi). */
static void moons(size_t slot, size_t n, nf_rng *rng, double p[2])
{
  size_t n_out = n / 2, n_in = n - n_out;
  if (slot < n_out) {
    double t = linspace(0, PI, slot, n_out, 1);
    p[0] = cos(t);
    p[1] = sin(t);
  } else {
    double t = linspace(0, PI, slot - n_out, n_in, 1);
    p[0] = 1 - cos(t);
    p[1] = 0.5 - sin(t);
  }
  add_noise(0.1, rng, p);
  p[0] = 2 * p[0] - 1;
  p[1] = 2 * p[1] - 0.2;
}

/* make_circles(factor 0.5, noise 0.08) * 3: radius 1 for the first n/2 slots,
   0.5 for the rest, at angles linspace(0, 2 pi, endpoint=False). */
static void circles(size_t slot, size_t n, nf_rng *rng, double p[2])
{
  size_t n_out = n / 2, n_in = n - n_out;
  int outer = slot < n_out;
  double r = outer ? 1.0 : 0.5;
  double t = outer ? linspace(0, 2 * PI, slot, n_out, 0)
                   : linspace(0, 2 * PI, slot - n_out, n_in, 0);
  p[0] = r * cos(t);
  p[1] = r * sin(t);
  add_noise(0.08, rng, p);
  p[0] *= 3;
  p[1] *= 3;
}

/* 3 r_c (cos t, sin t) + N(0, 0.08^2 I): four circles r_c = 1, 0.75, 0.5, 0.25 of
   n/4 slots each (the innermost takes the remainder), t = linspace(0, 2 pi, endpoint=False). */
static void rings(size_t slot, size_t n, nf_rng *rng, double p[2])
{
  size_t quarter = n / 4;
  size_t c = quarter == 0 || slot / quarter > 3 ? 3 : slot / quarter;
  size_t size = c == 3 ? n - 3 * quarter : quarter;
  double r = 1.0 - 0.25 * (double)c, t = linspace(0, 2 * PI, slot - c * quarter, size, 0);
  p[0] = 3 * r * cos(t);
  p[1] = 3 * r * sin(t);
  add_noise(0.08, rng, p);
}

/* 2 R(-a) f, f = (1 + 0.3 e0, 0.1 e1), a = 2 pi k / 5 + 0.25 exp(f0), class k = slot mod 5
   (FFJORD draws n/5 per class and drops the remainder; here every n is honoured). */
static void pinwheel(size_t slot, size_t n, nf_rng *rng, double p[2])
{
  (void)n;
  double f0 = 1 + 0.3 * nf_rng_normal(rng), f1 = 0.1 * nf_rng_normal(rng);
  double a = 2 * PI * (double)(slot % 5) / 5 + 0.25 * exp(f0);
  p[0] = 2 * (f0 * cos(a) + f1 * sin(a));
  p[1] = 2 * (-f0 * sin(a) + f1 * cos(a));
}

/* +-(-t cos t + u1/2, t sin t + u2/2) / 3 + N(0, 0.1^2 I), t = 3 pi sqrt(u0), u ~ U[0,1);
   the arm sign alternates with the slot (FFJORD mirrors each draw onto both arms;
   here every point has its own draw, with the same distribution). */
static void two_spirals(size_t slot, size_t n, nf_rng *rng, double p[2])
{
  (void)n;
  double t = 3 * PI * sqrt(nf_rng_uniform(rng));
  double u1 = nf_rng_uniform(rng), u2 = nf_rng_uniform(rng);
  double s = slot % 2 ? -1.0 : 1.0;
  p[0] = s * (-t * cos(t) + 0.5 * u1) / 3;
  p[1] = s * (t * sin(t) + 0.5 * u2) / 3;
  add_noise(0.1, rng, p);
}

/* 2 (x1, u - 2b + (floor(x1) mod 2)), x1 ~ U[-2, 2), u ~ U[0, 1), b ~ U{0, 1}:
   the squares of side 2 in [-4, 4)^2 whose cell indices sum to an even number. */
static void checkerboard(size_t slot, size_t n, nf_rng *rng, double p[2])
{
  (void)slot, (void)n;
  double x1 = 4 * nf_rng_uniform(rng) - 2;
  double x2 = nf_rng_uniform(rng) - 2.0 * (double)nf_rng_below(rng, 2);
  double parity = floor(x1) - 2 * floor(floor(x1) / 2);
  p[0] = 2 * x1;
  p[1] = 2 * (x2 + parity);
}

/* make_swiss_roll(noise 1) columns (x, z) / 5: (t cos t + e0, t sin t + e1) / 5,
   t = 1.5 pi (1 + 2 u), u ~ U[0, 1), e ~ N(0, I). */
static void swissroll(size_t slot, size_t n, nf_rng *rng, double p[2])
{
  (void)slot, (void)n;
  double t = 1.5 * PI * (1 + 2 * nf_rng_uniform(rng));
  p[0] = t * cos(t);
  p[1] = t * sin(t);
  add_noise(1.0, rng, p);
  p[0] /= 5;
  p[1] /= 5;
}

/* The table of toy sets: name, point generator, whether slots are shuffled
   (a random permutation of 0..n-1; else row i is slot i). */
#define TOY_SETS(X)                                                                     \
  X("8gaussians", eight_gaussians, 0) X("moons", moons, 1) X("circles", circles, 1)      \
  X("rings", rings, 1) X("pinwheel", pinwheel, 1) X("2spirals", two_spirals, 0)         \
  X("checkerboard", checkerboard, 0) X("swissroll", swissroll, 0)
#define TOY_NAME(name, point, shuffled) name,
#define TOY_ENTRY(name, point, shuffled) {point, shuffled},

typedef struct toy_set {
  toy_point_fn *point;
  int shuffled;
} toy_set;

static const char *const toy_names[] = {TOY_SETS(TOY_NAME) NULL};
static const toy_set toy_sets[] = {TOY_SETS(TOY_ENTRY)};

const char *const *nf_toy_names(void) { return toy_names; }

/* The toy set called name, or NULL. */
static const toy_set *find_toy(const char *name)
{
  for (size_t i = 0; toy_names[i]; i++)
    if (strcmp(toy_names[i], name) == 0) return &toy_sets[i];
  return NULL;
}

/* Writes "a, b, c" (the toy names) into buf of size cap, truncating if needed. */
static void list_names(char *buf, size_t cap)
{
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; toy_names[i] && used < cap; i++)
    used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", toy_names[i]);
}

/* Slot of each row: the identity, shuffled with rng if the set asks for it. */
static size_t *row_slots(const toy_set *set, size_t n, nf_rng *rng)
{
  size_t *slot = malloc(n * sizeof *slot);
  if (!slot) return NULL;
  for (size_t i = 0; i < n; i++) slot[i] = i;
  if (set->shuffled) nf_rng_shuffle(rng, n, slot);
  return slot;
}

nf_status nf_toy_sample(const char *name, size_t n, nf_rng *rng, nf_dataset **out)
{
  if (!name || !rng || !out) return nf_fail(NF_EINVAL, "nf_toy_sample: NULL argument");
  const toy_set *set = find_toy(name);
  if (!set) {
    char known[160];
    list_names(known, sizeof known);
    return nf_fail(NF_EINVAL, "nf_toy_sample: unknown toy set '%s' (known: %s)", name, known);
  }
  if (n == 0) return nf_fail(NF_EINVAL, "nf_toy_sample: n = 0 points requested");
  nf_dataset *ds = nf_dataset_new(n, 2);
  if (!ds) return NF_ENOMEM;
  size_t *slot = row_slots(set, n, rng);
  if (!slot) {
    nf_dataset_free(ds);
    return nf_fail(NF_ENOMEM, "nf_toy_sample: out of memory for %zu points", n);
  }
  for (size_t i = 0; i < n; i++) set->point(slot[i], n, rng, ds->x + 2 * i);
  free(slot);
  *out = ds;
  return NF_OK;
}
