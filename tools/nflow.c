/* tools/nflow.c — the `nflow` command: train discrete or continuous flows on a
   toy set or a CSV file, report held-out negative log-likelihoods, and compare
   flows on one split. Results end as key=value lines for scripts. */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include "nflow.h"
#include "targets.h"
#ifdef HAVE_CAIRO
#include "nflow/plot.h"
#endif
#ifdef HAVE_MPI
#include "nflow/mpi.h"
#endif

#define MAX_HIDDEN 16
#define MAX_FLOWS 8
#define TOY_TEST_POINTS 5000
#define TOY_VAL_POINTS 2000
#define TOY_MAX_TRAIN_POINTS 1000000
#define TRAIN_NLL_ROWS 5000
#define TARGET_REPORT_SAMPLES 100000 /* train --target: samples of the final report */

/* Options of one run; 0, NAN or NULL mean "the flow's default". */
typedef struct cfg {
  const char *flow, *data, *act, *schedule, *flows;
  const char *solver, *grad_mode, *trace, *dynamics, *mixing;
  size_t layers, iters, batch, threads, n_hidden, hidden[MAX_HIDDEN], max_steps, bins, components;
  double lr, test_frac, weight_decay, clip, scale_bound, tail_bound;
  double end_time, rtol, atol, kinetic, jacobian;
  size_t seed_plus_one, fixed_T;
  /* v1: model files, validation, checkpoints, curves, contexts */
  const char *out, *model, *test_file, *val_file, *resume, *checkpoint, *curve, *context_cols;
  const char *context, *context_row, *out_dir;
  double val_frac;
  size_t patience_plus_one, eval_every, split_seed_plus_one, n_samples, no_restore_best;
  /* preprocessing (appended last in sampling order) and interrupted runs */
  const char *bounds;
  double logit_alpha;
  size_t standardize, no_standardize, stop_after;
  size_t max_memory; /* --max-memory in bytes; 0 = no limit */
  size_t quiet;      /* --quiet: no progress line */
  /* reverse KL against a target instead of data */
  const char *target, *target_lib, *estimator, *precision;
  size_t target_dim, lattice, anneal_plus_one;
  double mass2, lambda, anneal_beta0;
  const char *png; /* --png: pictures of train and compare (cairo) */
} cfg;

/* Kinds of option values. Every count is an integer in [1, max] (the table's
   max, COUNT_MAX if it gives none); the real kinds differ by their range. */
typedef enum {
  OPT_STR,
  OPT_COUNT,
  OPT_REAL,      /* a finite number >= 0 */
  OPT_SIGNED,    /* any finite number */
  OPT_FRACTION1, /* a number in (0, 1] */
  OPT_POSITIVE,  /* a finite number > 0 */
  OPT_FRACTION,  /* a number in (0, 1) */
  OPT_FRACTION0, /* a number in [0, 1) */
  OPT_WIDTHS,
  OPT_COUNT0,
  OPT_BYTES,
  OPT_FLAG
} opt_kind;
/* Which flows an option applies to. */
typedef enum { ANY = 0, CNF_ONLY, DISCRETE_ONLY } opt_scope;
typedef struct opt_spec {
  const char *name;
  opt_kind kind;
  size_t offset;
  const char *help;
  opt_scope scope;
  uint64_t max; /* OPT_COUNT: the largest value accepted; 0 means COUNT_MAX */
} opt_spec;

#define COUNT_MAX 1000000000u /* the largest count an option takes unless the table says */
#define MAX_WIDTH 100000u     /* the largest hidden width */
#define MAX_LAYERS 10000u
#define MAX_CONTEXT_COLS 64

#define OPT(name_, kind_, field, help_) \
  {.name = name_, .kind = kind_, .offset = offsetof(cfg, field), .help = help_, .scope = ANY}
#define OPT_CNF(name_, kind_, field, help_) \
  {.name = name_, .kind = kind_, .offset = offsetof(cfg, field), .help = help_, .scope = CNF_ONLY}
#define OPT_DISC(name_, kind_, field, help_) \
  {.name = name_, .kind = kind_, .offset = offsetof(cfg, field), .help = help_, \
   .scope = DISCRETE_ONLY}
/* A count of at most max_. */
#define OPT_UPTO(name_, field, max_, help_) \
  {.name = name_, .kind = OPT_COUNT, .offset = offsetof(cfg, field), .help = help_, \
   .scope = ANY, .max = max_}
static const opt_spec opt_specs[] = {
  OPT("--flow", OPT_STR, flow, "realnvp|nice|glow|planar|radial|maf|iaf|nsf|nsf-coupling|gf|\n"
      "                       resflow|cnf (default realnvp)"),
  OPT("--flows", OPT_STR, flows, "compare: up to 8 comma-separated flows (default realnvp,cnf)"),
  OPT("--data", OPT_STR, data, "toy set (8gaussians, moons, circles, rings, pinwheel, 2spirals,\n"
                               "                       checkerboard, swissroll), a CSV file of numbers or a\n"
                               "                       NumPy .npy file (float64/float32, shape (n, d) or (n,))"),
  OPT("--iters", OPT_COUNT, iters, "training iterations, 1 to 1e9 (default 2000)"),
  OPT("--batch", OPT_COUNT, batch, "batch size, 1 to 1e9 (default 256; cnf on data 100)"),
  OPT("--lr", OPT_POSITIVE, lr, "Adam learning rate, > 0 (default 5e-3; cnf 1e-3)"),
  OPT("--schedule", OPT_STR, schedule, "cosine|constant learning rate (default cosine; cnf constant)"),
  OPT("--weight-decay", OPT_REAL, weight_decay, "L2 weight decay as torch.optim.Adam, >= 0 (default 0; cnf 1e-5)"),
  OPT("--clip", OPT_REAL, clip, "gradient-norm clipping, >= 0, 0 = off (default 5; cnf 0)"),
  OPT_UPTO("--layers", layers, MAX_LAYERS, "couplings / blocks / layers, 1 to 10000 (default 8;\n"
           "                       nsf, nsf-coupling 4; gf 6; cnf 1)"),
  OPT("--hidden", OPT_WIDTHS, n_hidden, "up to 16 hidden widths, each 1 to 100000 (default 64,64;\n"
                               "                       cnf 64,64,64)"),
  OPT("--act", OPT_STR, act, "relu|tanh|elu|softplus (default relu); cnf: tanh|softplus|swish (tanh)"),
  OPT_DISC("--scale-bound", OPT_POSITIVE, scale_bound, "soft clamp of affine log-scales, > 0 (default 3; maf, iaf 5)"),
  OPT_UPTO("--bins", bins, 1000, "nsf, nsf-coupling: spline bins, 1 to 1000 (default 8)"),
  OPT_DISC("--tail-bound", OPT_POSITIVE, tail_bound, "nsf, nsf-coupling: splines on [-B, B], > 0 (default 5)"),
  OPT_UPTO("--components", components, 1000, "gf: logistic components per coordinate (default 8)"),
  OPT_DISC("--mixing", OPT_STR, mixing, "couplings on d >= 3: random|reverse|none permutation\n"
           "                       between layers (default random)"),
  OPT_CNF("--dynamics", OPT_STR, dynamics, "cnf: concatsquash|concat|sinusoidal (default concatsquash)"),
  OPT_CNF("--end-time", OPT_POSITIVE, end_time, "cnf: integration time T, > 0 (default 0.5)"),
  OPT_CNF("--fixed-end-time", OPT_FLAG, fixed_T, "cnf: do not learn T"),
  OPT_CNF("--solver", OPT_STR, solver, "cnf: dopri5|rk4|euler|adams|bdf (default dopri5)"),
  OPT_CNF("--rtol", OPT_POSITIVE, rtol, "cnf: relative tolerance, > 0 (default 1e-5)"),
  OPT_CNF("--atol", OPT_POSITIVE, atol, "cnf: absolute tolerance, > 0 (default 1e-5)"),
  OPT_CNF("--steps", OPT_COUNT, max_steps, "cnf: fixed steps of rk4/euler, 1 to 1e9 (default 100)"),
  OPT_CNF("--grad-mode", OPT_STR, grad_mode, "cnf: backsolve|checkpoint|discrete (default backsolve)"),
  OPT_CNF("--trace", OPT_STR, trace, "cnf: exact|rademacher|gaussian (default exact up to d = 8,\n"
          "                       rademacher above; test NLL and eval take the exact trace up to d = 128)"),
  OPT_CNF("--kinetic", OPT_REAL, kinetic, "cnf: RNODE kinetic-energy weight, >= 0 (default 0)"),
  OPT_CNF("--jacobian", OPT_REAL, jacobian, "cnf: RNODE Jacobian-norm weight, >= 0 (default 0)"),
  OPT("--test-frac", OPT_FRACTION, test_frac, "held-out fraction of a CSV file, in (0, 1) (default 0.2)"),
  OPT("--seed", OPT_COUNT0, seed_plus_one, "random seed of the flow and training, 0 to 2^64-2 (default 1)"),
  OPT("--split-seed", OPT_COUNT0, split_seed_plus_one, "seed of the data split and toy streams (default: --seed)"),
  OPT("--val-frac", OPT_FRACTION0, val_frac, "validation fraction of the training rows, in [0, 1) (default\n"
                               "                       0.1; toy sets: a fresh stream; 0 = no validation)"),
  OPT("--test", OPT_STR, test_file, "a separate test file (CSV or .npy) instead of a split"),
  OPT("--val", OPT_STR, val_file, "a separate validation file (CSV or .npy) instead of --val-frac"),
  OPT("--eval-every", OPT_COUNT, eval_every, "validate (and record the curve) every K iterations (default iters/50)"),
  OPT("--patience", OPT_COUNT0, patience_plus_one, "stop after K validations without improvement, 0 = never\n"
      "                       (default 10 for files, never for toy sets)"),
  OPT("--no-restore-best", OPT_FLAG, no_restore_best, "keep the last parameters, not the best validated"),
  OPT("--curve", OPT_STR, curve, "write the training curve to FILE.csv (iter,seconds,train_loss,val_loss)"),
  OPT("--checkpoint", OPT_STR, checkpoint, "write the whole training state to FILE (atomically)\n"
                               "                       every --eval-every iterations if given, and at the end"),
  OPT("--resume", OPT_STR, resume, "continue from a --checkpoint file (same data and options): the\n"
                               "                       result equals the uninterrupted run's bit for bit"),
  OPT("--stop-after", OPT_COUNT, stop_after, "stop after N iterations of this invocation, writing\n"
                               "                       --checkpoint (for batch queues with time limits)"),
  OPT("--standardize", OPT_FLAG, standardize, "standardise the data columns, fitted on the training\n"
                               "                       rows (default for files, not for toy sets)"),
  OPT("--no-standardize", OPT_FLAG, no_standardize, "do not standardise"),
  OPT("--bounds", OPT_STR, bounds, "a,b (every column) or a1,b1,a2,b2,... (one per column): the data\n"
                               "                       lie in [a, b], mapped onto R by a logit; rows outside are refused"),
  OPT("--logit", OPT_REAL, logit_alpha, "with --bounds: the logit's alpha in [0, 0.5) (default 0.05)"),
  OPT("--context-cols", OPT_STR, context_cols, "up to 64 comma-separated 0-based columns of the file that\n"
                               "                       are the condition y of p(x|y)"),
  OPT("--out", OPT_STR, out, "train: model file (.safetensors); eval: log p per row (.npy|.csv);\n"
                               "                       sample: the samples (.npy|.csv; default CSV on stdout);\n"
                               "                       plot: the picture (.png)"),
  OPT("--out-dir", OPT_STR, out_dir, "compare: save each flow as DIR/FLOW.safetensors"),
  OPT("--model", OPT_STR, model, "eval, sample, info: the model file"),
  OPT("-n", OPT_COUNT, n_samples, "sample: number of samples, 1 to 1e9 (default 1000)"),
  OPT("--context", OPT_STR, context, "sample: a file of context rows, one per sample"),
  OPT("--context-row", OPT_STR, context_row, "sample: one context row for every sample, e.g. 0.5,1.2"),
  OPT("--target", OPT_STR, target, "train, sample: doublewell|mixture|phi4: train by reverse KL\n"
      "                       against this unnormalised density instead of data; print\n"
      "                       ess, logz, logz_err and reweighted observables"),
  OPT("--target-lib", OPT_STR, target_lib, "FILE.so:SYMBOL: a user's target, SYMBOL an nf_target_fn\n"
      "                       (nflow/target.h) giving log p~ and its gradient; needs --dim"),
  OPT("--dim", OPT_COUNT, target_dim, "--target-lib: the target's dimension"),
  OPT_UPTO("--lattice", lattice, 1000, "phi4: lattice side L, 2 to 1000 (default 8)"),
  OPT("--mass2", OPT_SIGNED, mass2, "phi4: m^2, any finite number (default -4)"),
  OPT("--lambda", OPT_REAL, lambda, "phi4: quartic coupling lambda, >= 0 (default 8)"),
  OPT("--anneal", OPT_COUNT0, anneal_plus_one, "--target: temper the target over the first K iterations,\n"
      "                       beta rising from --anneal-beta0 to 1; 0 = off (default iters/2)"),
  OPT("--anneal-beta0", OPT_FRACTION1, anneal_beta0, "--target: the first iteration's beta, in (0, 1] (default 0.1)"),
  OPT("--estimator", OPT_STR, estimator, "--target: total|stl reverse-KL gradient (default total)"),
  OPT("--quiet", OPT_FLAG, quiet, "train, compare: no progress line (it is drawn only when stderr\n"
      "                       is a terminal, at most 10 times a second)"),
  OPT("--png", OPT_STR, png, "train, compare: draw the run into FILE.png (compare: data | each\n"
      "                       flow's density with its test NLL; train: data, density, samples\n"
      "                       and curves, a corner plot for d > 2); plot: see --out (needs cairo)"),
  OPT("--precision", OPT_STR, precision, "train, compare: the networks' arithmetic, double|single (default\n"
      "                       double; single runs sgemm with float activations, theta, ODE\n"
      "                       states and log-dets stay double)"),
  OPT_UPTO("--threads", threads, NF_MAX_THREADS, "worker threads, 1 to 256 (default 1): each batch is split\n"
      "                       between them (a CNF: the rows of each right-hand side);\n"
      "                       BLAS runs on one thread inside each (OPENBLAS_NUM_THREADS\n"
      "                       is overridden); the same N repeats bit for bit"),
  OPT("--max-memory", OPT_BYTES, max_memory, "train, compare: refuse a flow whose estimated training memory\n"
                               "                       (parameters, gradient, Adam moments, batch buffers)\n"
                               "                       exceeds BYTES; suffixes K, M, G (powers of 1024)"),
};
#define N_OPTS (sizeof opt_specs / sizeof *opt_specs)

/* Prints "nflow: <message>" and returns the exit status for bad usage. */
/* Data-parallel training under mpirun (train on data, more than one
   process): the ranks' communicator; NULL otherwise. Rank 0 alone prints and
   writes files; the others train their shard silently. */
static nf_comm *g_comm;

/* Whether this process writes: always, but under mpirun rank 0 only. */
static int is_root(void)
{
  return !g_comm || g_comm->rank == 0;
}

/* Under mpirun, every rank's status st agreed (the lowest failing rank's,
   with its message): 0, or the exit status 1 after fn's message from rank 0. */
static int agree(int failed, const char *what)
{
  if (!g_comm) return failed;
  nf_status st = nf_comm_agree(g_comm, failed ? (nf_last_status() ? nf_last_status() : NF_EIO)
                                              : NF_OK);
  if (st == NF_OK) return 0;
  if (!failed) {
    fprintf(stderr, "nflow: %s: %s\n", what, nf_errmsg());
    return 2;
  }
  return failed;
}

static int die(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("nflow: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 2;
}

/* a * b into *out; nonzero (and *out untouched) if the product overflows size_t. */
static int mul_overflows(size_t a, size_t b, size_t *out)
{
  if (b && a > SIZE_MAX / b) return 1;
  *out = a * b;
  return 0;
}

static void usage(FILE *out)
{
  fputs("usage: nflow train --data NAME|FILE.csv|FILE.npy [options]\n"
        "       nflow compare --data NAME|FILE.csv|FILE.npy [--flows realnvp,cnf] [options]\n"
        "       nflow eval --model M.safetensors --data NAME|FILE [--out logp.npy|logp.csv]\n"
        "       nflow train --target doublewell|mixture|phi4 [--lattice L --mass2 M --lambda G]\n"
        "       nflow train --target-lib FILE.so:SYMBOL --dim D [options]\n"
        "       nflow sample --model M.safetensors [-n N] [--seed S] [--out F.npy|F.csv]\n"
        "       nflow sample --model M.safetensors --target T [-n N]  (reweighted observables)\n"
        "       nflow info --model M.safetensors\n"
        "       nflow plot --model M.safetensors [--data X] [--target T] --out F.png\n"
        "       nflow --version\n", out);
  for (size_t k = 0; k < N_OPTS; k++)
    fprintf(out, "  %-18s %s\n", opt_specs[k].name, opt_specs[k].help);
  fputs("Toy sets train on fresh points and test on 5000 points from another stream of\n"
        "the split seed, which eval reproduces; eval on a file evaluates all its rows.\n"
        "--resume continues the saved state; the cosine schedule spans this run's --iters.\n"
        "CSV files are split. Output ends with key=value lines (test_nll, params,\n"
        "train_seconds (validation included), ms_per_iter (per training step, validation\n"
        "excluded), diverged, and for cnf nfe_forward and nfe_backward per step);\n"
        "diverged=1 (with a warning) when the smoothed training loss stayed more than\n"
        "10 nats per dimension above its best for 200 iterations.\n", out);
}

/* Scans a decimal integer at s (digits only: no sign, space, exponent or
   fraction) into *v, *end just past it; nonzero unless it lies in [lo, hi]. */
static int scan_uint(const char *s, const char **end, uint64_t lo, uint64_t hi, uint64_t *v)
{
  char *e;
  *end = s;
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  unsigned long long u = strtoull(s, &e, 10);
  *end = e;
  if (errno == ERANGE || u < lo || u > hi) return -1;
  *v = (uint64_t)u;
  return 0;
}

/* Parses a whole option value as an integer in [lo, hi]. */
static int parse_uint(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
  const char *end;
  if (scan_uint(s, &end, lo, hi, out) || *end)
    return die("%s: expected an integer from %" PRIu64 " to %" PRIu64 ", got '%s'", opt, lo,
               hi, s);
  return 0;
}

/* Parses a comma-separated list of at most max_n integers in [lo, hi] (what
   names them, like an example) into v[0..*n). */
static int parse_uint_list(const char *opt, const char *s, uint64_t lo, uint64_t hi,
                           size_t max_n, const char *what, const char *like, size_t *v,
                           size_t *n)
{
  size_t items = 1;
  for (const char *p = s; *p; p++) items += *p == ',';
  if (items > max_n) return die("%s: at most %zu %s, got %zu", opt, max_n, what, items);
  const char *p = s;
  for (*n = 0; *n < items; (*n)++) {
    uint64_t x;
    const char *end;
    if (scan_uint(p, &end, lo, hi, &x) || (*end && *end != ','))
      return die("%s: expected %s from %" PRIu64 " to %" PRIu64 " separated by commas (like "
                 "%s), got '%s'", opt, what, lo, hi, like, s);
    v[*n] = (size_t)x;
    p = end + (*end == ',');
  }
  return 0;
}

/* Parses a finite number in the range of kind. */
static int parse_real(const char *opt, opt_kind kind, const char *s, double *out)
{
  char *end;
  double v = strtod(s, &end);
  int ok = end != s && !*end && isfinite(v);
  const char *range;
  switch (kind) {
  case OPT_POSITIVE: range = "a positive number", ok = ok && v > 0; break;
  case OPT_FRACTION: range = "a number strictly between 0 and 1", ok = ok && v > 0 && v < 1; break;
  case OPT_FRACTION0: range = "a number in [0, 1)", ok = ok && v >= 0 && v < 1; break;
  case OPT_SIGNED: range = "a finite number"; break;
  case OPT_FRACTION1: range = "a number in (0, 1]", ok = ok && v > 0 && v <= 1; break;
  default: range = "a non-negative number", ok = ok && v >= 0; break;
  }
  if (!ok) return die("%s: expected %s, got '%s'", opt, range, s);
  *out = v;
  return 0;
}

/* Parses a byte count with an optional suffix K, M or G (powers of 1024). */
static int parse_bytes(const char *opt, const char *s, size_t *out)
{
  static const char suffix[] = "KMG";
  uint64_t v = 0, unit = 1;
  const char *end;
  int ok = !scan_uint(s, &end, 1, UINT64_MAX, &v);
  if (ok && *end) {
    const char *k = strchr(suffix, *end & ~0x20); /* K, M, G or k, m, g */
    ok = k && *k && !end[1];
    if (ok) unit = (uint64_t)1 << (10 * (k - suffix + 1));
  }
  if (!ok || v > SIZE_MAX / unit)
    return die("%s: expected a byte count from 1 to %zu, optionally with a suffix K, M or G "
               "(like 512M), got '%s'", opt, (size_t)SIZE_MAX, s);
  *out = (size_t)(v * unit);
  return 0;
}

/* Stores one option value into c by its spec. */
static int set_option(const opt_spec *o, const char *val, cfg *c)
{
  char *field = (char *)c + o->offset;
  uint64_t v = 0;
  int rc = 0;
  switch (o->kind) {
  case OPT_STR: *(const char **)field = val; break;
  case OPT_COUNT:
    if (!(rc = parse_uint(o->name, val, 1, o->max ? o->max : COUNT_MAX, &v))) *(size_t *)field = (size_t)v;
    break;
  case OPT_REAL: case OPT_POSITIVE: case OPT_FRACTION: case OPT_FRACTION0: case OPT_SIGNED:
  case OPT_FRACTION1:
    rc = parse_real(o->name, o->kind, val, (double *)field);
    break;
  case OPT_WIDTHS:
    rc = parse_uint_list(o->name, val, 1, MAX_WIDTH, MAX_HIDDEN, "widths", "64,64", c->hidden,
                         &c->n_hidden);
    break;
  case OPT_COUNT0: /* a count from 0 (seeds too), stored plus one, 0 meaning unset */
    if (!(rc = parse_uint(o->name, val, 0, SIZE_MAX - 1, &v))) *(size_t *)field = (size_t)v + 1;
    break;
  case OPT_BYTES: rc = parse_bytes(o->name, val, (size_t *)field); break;
  case OPT_FLAG: break;
  }
  return rc;
}

/* The spec of an option name; NULL if there is none. */
static const opt_spec *find_option(const char *name)
{
  for (size_t k = 0; k < N_OPTS; k++)
    if (!strcmp(name, opt_specs[k].name)) return &opt_specs[k];
  return NULL;
}

/* 0 if name is a flow the tool builds, else a refusal blaming opt that lists them all. */
static int check_flow(const char *opt, const char *name)
{
  nf_recipe_kind kind;
  if (!strcmp(name, "cnf") || nf_recipe_parse(name, &kind) == NF_OK) return 0;
  char list[256] = "";
  for (int k = 0; strcmp(nf_recipe_name((nf_recipe_kind)k), "?"); k++) {
    size_t len = strlen(list);
    snprintf(list + len, sizeof list - len, "%s, ", nf_recipe_name((nf_recipe_kind)k));
  }
  if (strlen(list) >= 2) list[strlen(list) - 2] = '\0';
  return die("%s: unknown flow '%s' (expected %s or cnf)", opt, name, list);
}

/* Splits the --flows list s into at most MAX_FLOWS distinct known names,
   copied into buf (size bytes); 0 on success. */
static int parse_flows(const char *s, char *buf, size_t size, const char **flow, size_t *k)
{
  size_t items = 1;
  for (const char *p = s; *p; p++) items += *p == ',';
  if (items > MAX_FLOWS) return die("--flows: at most %d flows, got %zu", MAX_FLOWS, items);
  if (strlen(s) >= size) return die("--flows: the list is longer than %zu characters", size - 1);
  memcpy(buf, s, strlen(s) + 1);
  char *p = buf;
  for (*k = 0; *k < items; (*k)++) {
    char *comma = strchr(p, ',');
    if (comma) *comma = '\0';
    if (!*p) return die("--flows: expected names like realnvp,cnf, got '%s'", s);
    int rc = check_flow("--flows", p);
    if (rc) return rc;
    for (size_t i = 0; i < *k; i++)
      if (!strcmp(flow[i], p)) return die("--flows: %s is given twice", p);
    flow[*k] = p;
    p = comma ? comma + 1 : p + strlen(p);
  }
  return 0;
}

/* Whether a command-line word is an option rather than an option's value. */
static int is_option_word(const char *s)
{
  return find_option(s) || !strncmp(s, "--", 2) || !strcmp(s, "-h");
}

/* Which options the command line gave (by index in opt_specs). */
static unsigned char given[N_OPTS];

/* Fills c from argv (after the subcommand); nonzero exit status on error. */
static int parse_args(int argc, char **argv, cfg *c, int need_data)
{
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage(stdout);
      exit(0);
    }
    const opt_spec *o = find_option(argv[i]);
    if (!o) return die("unknown option '%s' (see nflow --help)", argv[i]);
    given[o - opt_specs] = 1;
    if (o->kind == OPT_FLAG) {
      *(size_t *)((char *)c + o->offset) = 1;
      continue;
    }
    if (i + 1 >= argc || is_option_word(argv[i + 1]))
      return die("%s needs a value (see nflow --help)", argv[i]);
    int rc = set_option(o, argv[++i], c);
    if (rc) return rc;
  }
  if (need_data && !c->data && !c->target && !c->target_lib)
    return die("--data is required (a toy set name or a CSV file)");
  if (c->flow) return check_flow("--flow", c->flow);
  return 0;
}

/* Refuses (train) an option given for a flow it does not apply to. */
static int check_scope(const char *flow)
{
  int cnf = !strcmp(flow, "cnf");
  for (size_t k = 0; k < N_OPTS; k++)
    if (given[k] && ((opt_specs[k].scope == CNF_ONLY && !cnf) ||
                     (opt_specs[k].scope == DISCRETE_ONLY && cnf)))
      return die("%s does not apply to --flow %s (%s only)", opt_specs[k].name, flow,
                 opt_specs[k].scope == CNF_ONLY ? "cnf" : "discrete flows");
  return 0;
}

/* compare: a note on stderr for each option some of the flows ignore. */
static void note_scope(size_t k_flows, const char *const *flows)
{
  for (size_t k = 0; k < N_OPTS; k++) {
    if (!given[k] || opt_specs[k].scope == ANY) continue;
    char ignored[256] = "";
    for (size_t i = 0; i < k_flows; i++) {
      int cnf = !strcmp(flows[i], "cnf");
      if ((opt_specs[k].scope == CNF_ONLY) != cnf) {
        size_t len = strlen(ignored);
        snprintf(ignored + len, sizeof ignored - len, "%s%s", len ? "," : "", flows[i]);
      }
    }
    if (*ignored)
      fprintf(stderr, "nflow: note: %s applies to %s only; ignored by %s\n", opt_specs[k].name,
              opt_specs[k].scope == CNF_ONLY ? "cnf" : "discrete flows", ignored);
  }
}

/* The defaults of c->flow for every option the user left unset: FFJORD's toy
   configuration for cnf, a cosine-annealed Adam for the discrete flows. */
static void fill_defaults(cfg *c)
{
  int cnf = !strcmp(c->flow, "cnf");
  static const size_t discrete_hidden[] = {64, 64}, cnf_hidden[] = {64, 64, 64};
  if (!c->n_hidden) {
    c->n_hidden = cnf ? 3 : 2;
    memcpy(c->hidden, cnf ? cnf_hidden : discrete_hidden, c->n_hidden * sizeof *c->hidden);
  }
  nf_recipe_kind kind;
  if (!c->layers) c->layers = cnf ? 1 : nf_recipe_parse(c->flow, &kind) ? 8 : nf_recipe_defaults(kind).layers;
  if (!c->batch) c->batch = cnf ? 100 : 256;
  if (!c->act) c->act = cnf ? "tanh" : "relu";
  if (!c->schedule) c->schedule = cnf ? "constant" : "cosine";
  if (isnan(c->lr)) c->lr = cnf ? 1e-3 : 5e-3;
  if (isnan(c->weight_decay)) c->weight_decay = cnf ? 1e-5 : 0.0;
  if (isnan(c->clip)) c->clip = cnf ? 0.0 : 5.0;
}

/* Above this dimension a CNF trains with Hutchinson's trace unless --trace says
   otherwise: the exact trace costs d tangent passes per right-hand side. */
#define CNF_EXACT_TRAINING_MAX_DIM 8

/* The trace a CNF on R^dim trains with: --trace, else exact up to
   CNF_EXACT_TRAINING_MAX_DIM and Rademacher above (-1 on a bad name). */
static int cnf_trace(const cfg *c, size_t dim, nf_trace_kind *trace)
{
  *trace = dim > CNF_EXACT_TRAINING_MAX_DIM ? NF_TRACE_RADEMACHER : NF_TRACE_EXACT;
  if (c->trace && nf_cnf_trace_parse(c->trace, trace)) return die("--trace: %s", nf_errmsg());
  return 0;
}

/* The CNF options of c on R^dim (FFJORD's defaults where unset). */
static int cnf_options(const cfg *c, size_t dim, nf_cnf_opts *o)
{
  *o = nf_cnf_defaults();
  o->n_hidden = c->n_hidden;
  o->hidden = c->hidden;
  o->train_end_time = !c->fixed_T;
  if (!isnan(c->end_time)) o->end_time = c->end_time;
  if (!isnan(c->kinetic)) o->kinetic_weight = c->kinetic;
  if (!isnan(c->jacobian)) o->jacobian_weight = c->jacobian;
  nf_ode_grad grad = o->ode.grad;
  if (c->solver) {
    nf_ode_method m;
    if (nf_ode_method_parse(c->solver, &m)) return die("--solver: %s", nf_errmsg());
    o->ode = nf_ode_defaults(m);
  }
  if (!isnan(c->rtol)) o->ode.rtol = c->rtol;
  else o->ode.rtol = 1e-5;
  if (!isnan(c->atol)) o->ode.atol = c->atol;
  else o->ode.atol = 1e-5;
  if (c->max_steps) o->ode.fixed_steps = c->max_steps;
  o->ode.grad = grad;
  if (c->grad_mode && nf_ode_grad_parse(c->grad_mode, &o->ode.grad))
    return die("--grad-mode: %s", nf_errmsg());
  if (cnf_trace(c, dim, &o->trace)) return 1;
  if (c->act && nf_odenet_act_parse(c->act, &o->act)) return die("--act: %s", nf_errmsg());
  if (c->dynamics && nf_odenet_kind_parse(c->dynamics, &o->kind))
    return die("--dynamics: %s", nf_errmsg());
  if (c->precision && nf_precision_parse(c->precision, &o->precision))
    return die("--precision: %s", nf_errmsg());
  return 0;
}

/* A flow of c->layers CNF blocks on R^dim. */
static int build_cnf(const cfg *c, size_t dim, size_t ctx_dim, nf_rng *rng, nf_flow **out)
{
  nf_cnf_opts o;
  int rc = cnf_options(c, dim, &o);
  if (rc) return rc;
  nf_flow *flow = nf_flow_new(dim, ctx_dim, NF_BASE_STD_NORMAL);
  for (size_t k = 0; flow && k < c->layers; k++) {
    nf_layer *layer = nf_cnf_new(dim, ctx_dim, &o, rng);
    if (!layer || nf_flow_push(flow, layer)) {
      nf_flow_free(flow);
      return die("--flow cnf: %s", nf_errmsg());
    }
  }
  *out = flow;
  return flow ? 0 : die("--flow cnf: %s", nf_errmsg());
}

/* --mixing's value; nonzero (with a message) for another name. */
static int mixing_parse(const char *name, nf_recipe_mixing *mixing)
{
  static const char *const names[] = {"random", "reverse", "none"};
  for (int k = 0; k < 3; k++)
    if (!strcmp(name, names[k])) {
      *mixing = (nf_recipe_mixing)k;
      return 0;
    }
  return die("--mixing: unknown '%s' (expected random, reverse or none)", name);
}

/* The flow c describes, with parameters drawn from rng. */
static int build_flow(const cfg *c, size_t dim, size_t ctx_dim, nf_rng *rng, nf_flow **out)
{
  if (!strcmp(c->flow, "cnf")) return build_cnf(c, dim, ctx_dim, rng, out);
  nf_recipe_kind kind;
  nf_activation act;
  if (nf_recipe_parse(c->flow, &kind)) return die("--flow: %s", nf_errmsg());
  if (nf_activation_parse(c->act, &act)) return die("--act: %s", nf_errmsg());
  nf_recipe recipe = nf_recipe_defaults(kind);
  recipe.layers = c->layers;
  recipe.n_hidden = c->n_hidden;
  recipe.hidden = c->hidden;
  recipe.act = act;
  if (!isnan(c->scale_bound)) recipe.scale_bound = c->scale_bound;
  if (!isnan(c->tail_bound)) recipe.tail_bound = c->tail_bound;
  if (c->bins) recipe.bins = c->bins;
  if (c->components) recipe.components = c->components;
  if (c->mixing && mixing_parse(c->mixing, &recipe.mixing)) return 2;
  if (c->precision && nf_precision_parse(c->precision, &recipe.precision))
    return die("--precision: %s", nf_errmsg());
  if (c->target && !strcmp(c->target, "phi4")) /* couplings on the checkerboard */
    recipe.lattice = c->lattice ? c->lattice : PHI4_DEFAULT_LATTICE;
  *out = nf_recipe_build(dim, ctx_dim, &recipe, rng);
  return *out ? 0 : die("--flow %s: %s", c->flow, nf_errmsg());
}

/* True if name is one of the toy sets. */
static int is_toy(const char *name)
{
  for (const char *const *t = nf_toy_names(); *t; t++)
    if (!strcmp(*t, name)) return 1;
  return 0;
}

/* Reads a data file: NumPy .npy if the name ends in ".npy", CSV otherwise. */
static nf_status read_file(const char *path, nf_dataset **out)
{
  size_t len = strlen(path);
  if (len >= 4 && strcmp(path + len - 4, ".npy") == 0) return nf_dataset_read_npy(path, out);
  return nf_dataset_read_csv(path, out);
}

/* ---- data ---- */

/* Rows x (and their contexts y, NULL for an unconditional flow) of one part. */
typedef struct part {
  nf_dataset *x, *y;
} part;

/* The training, validation (x NULL if none) and test parts. */
typedef struct split {
  part train, val, test;
} split;

static void part_free(part *p)
{
  nf_dataset_free(p->x);
  nf_dataset_free(p->y);
  p->x = p->y = NULL;
}

static void split_free(split *s)
{
  part_free(&s->train);
  part_free(&s->val);
  part_free(&s->test);
}

/* The seed of the split and toy streams. */
static uint64_t split_seed(const cfg *c)
{
  return c->split_seed_plus_one ? c->split_seed_plus_one - 1 : c->seed_plus_one - 1;
}

/* Parses "--context-cols 2,3" into cols (at most max); 0 on success. */
static int parse_cols(const char *s, size_t max, size_t *cols, size_t *n)
{
  int rc = parse_uint_list("--context-cols", s, 0, SIZE_MAX, max, "0-based column indices",
                           "2,3", cols, n);
  for (size_t i = 0; !rc && i < *n; i++)
    for (size_t k = 0; k < i; k++)
      if (cols[k] == cols[i]) return die("--context-cols: column %zu given twice", cols[i]);
  return rc;
}

/* Splits the columns of all into x (the others) and y (the context columns
   cols, in the order given); all is freed. */
static int split_columns(nf_dataset *all, const char *spec, const char *path, part *out)
{
  size_t cols[MAX_CONTEXT_COLS], nc;
  int rc = parse_cols(spec, MAX_CONTEXT_COLS, cols, &nc);
  for (size_t k = 0; !rc && k < nc; k++)
    if (cols[k] >= all->dim)
      rc = die("--context-cols: column %zu is out of range: %s has %zu columns", cols[k],
               path, all->dim);
  if (!rc && nc >= all->dim)
    rc = die("--context-cols: no data columns left in %s (%zu columns)", path, all->dim);
  if (rc) {
    nf_dataset_free(all);
    return rc;
  }
  out->x = nf_dataset_new(all->n, all->dim - nc);
  out->y = nf_dataset_new(all->n, nc);
  if (!out->x || !out->y) {
    nf_dataset_free(all);
    return die("%s: %s", path, nf_errmsg());
  }
  for (size_t i = 0; i < all->n; i++) {
    size_t jx = 0;
    for (size_t j = 0; j < all->dim; j++) {
      size_t k = 0;
      while (k < nc && cols[k] != j) k++;
      double v = all->x[i * all->dim + j];
      if (k < nc) out->y->x[i * nc + k] = v;
      else out->x->x[i * out->x->dim + jx++] = v;
    }
  }
  nf_dataset_free(all);
  return 0;
}

/* A part from a file's rows: x, or x and y when spec names context columns. */
static int make_part(nf_dataset *all, const char *spec, const char *path, part *out)
{
  if (!spec) {
    out->x = all;
    return 0;
  }
  return split_columns(all, spec, path, out);
}

/* The held-out toy stream of a split seed (what train tests on and eval reproduces). */
static nf_status toy_test(const char *name, uint64_t seed, nf_dataset **out)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_rng_jump(&rng);
  nf_rng_jump(&rng);
  return nf_toy_sample(name, TOY_TEST_POINTS, &rng, out);
}

/* ---- preprocessing ---- */

/* "logit", "standardize" or "none": the fixed layer c appends after the
   learned ones (last in sampling order, so log p is in the data's units). */
static const char *preprocess_kind(const cfg *c)
{
  if (c->bounds) return "logit";
  if (!c->data) return "none"; /* a target: no data to fit */
  if (c->standardize || (!c->no_standardize && !is_toy(c->data))) return "standardize";
  return "none";
}

/* The logit's alpha: --logit, or 0.05. */
static double logit_alpha(const cfg *c)
{
  return isnan(c->logit_alpha) ? 0.05 : c->logit_alpha;
}

/* Refuses contradictory preprocessing and checkpoint options (train, compare). */
static int check_run_options(const cfg *c)
{
  if (c->standardize && c->no_standardize)
    return die("--standardize and --no-standardize exclude each other");
  if (c->bounds && c->standardize)
    return die("--standardize does not apply with --bounds (the logit maps the box onto R)");
  if (!isnan(c->logit_alpha) && !c->bounds) return die("--logit needs --bounds a,b");
  if (!isnan(c->logit_alpha) && !(c->logit_alpha < 0.5))
    return die("--logit: expected alpha in [0, 0.5), got %g", c->logit_alpha);
  if (c->stop_after && !c->checkpoint)
    return die("--stop-after needs --checkpoint FILE (to resume from)");
  return 0;
}

/* Parses --bounds for dim data columns into lo and hi (dim values each):
   "a,b" for every column or one "a,b" pair per column. */
static int parse_bounds(const char *s, size_t dim, double *lo, double *hi)
{
  double *v = malloc(2 * dim * sizeof *v);
  if (!v) return die("out of memory");
  size_t k = 0;
  int rc = 0;
  for (const char *p = s; !rc && *p;) {
    char *end;
    double x = strtod(p, &end);
    if (end == p || !isfinite(x) || (*end && *end != ',') || (*end == ',' && !end[1]) ||
        k == 2 * dim)
      rc = 1;
    else
      v[k++] = x;
    p = *end ? end + 1 : end;
  }
  if (rc || (k != 2 && k != 2 * dim)) {
    free(v);
    return die("--bounds: expected a,b or one a,b pair for each of the %zu data columns, got '%s'",
               dim, s);
  }
  for (size_t j = 0; j < dim; j++) {
    lo[j] = k == 2 ? v[0] : v[2 * j];
    hi[j] = k == 2 ? v[1] : v[2 * j + 1];
    if (!(lo[j] < hi[j]) || !isfinite(hi[j] - lo[j])) {
      double a = lo[j], b = hi[j];
      free(v);
      return die("--bounds: [%g, %g] (data column %zu) is not an interval a < b", a, b, j + 1);
    }
  }
  free(v);
  return 0;
}

/* The file columns (0-based) of the data x: all but --context-cols; *nx of them. */
static int data_columns(const cfg *c, size_t ncols, size_t *cols, size_t *nx)
{
  size_t ctx[MAX_CONTEXT_COLS], nc = 0;
  if (c->context_cols) {
    int rc = parse_cols(c->context_cols, MAX_CONTEXT_COLS, ctx, &nc);
    if (rc) return rc;
  }
  *nx = 0;
  for (size_t j = 0; j < ncols; j++) {
    size_t k = 0;
    while (k < nc && ctx[k] != j) k++;
    if (k == nc) cols[(*nx)++] = j;
  }
  return 0;
}

/* Refuses rows of ds (the data file `what`, or a toy stream) with a data
   value outside --bounds (or on an end when --logit 0), naming the first
   such row and column (1-based, a header not counted) and the count. */
static int check_bounds(const cfg *c, const nf_dataset *ds, const char *what)
{
  size_t nx = 0, *cols = malloc(ds->dim * sizeof *cols);
  double *lo = malloc(ds->dim * sizeof *lo), *hi = malloc(ds->dim * sizeof *hi);
  int rc = cols && lo && hi ? data_columns(c, ds->dim, cols, &nx) : die("out of memory");
  if (!rc && nx) rc = parse_bounds(c->bounds, nx, lo, hi);
  int open_ends = logit_alpha(c) == 0;
  size_t bad = 0, bi = 0, bj = 0;
  for (size_t i = 0; !rc && nx && i < ds->n; i++) {
    for (size_t k = 0; k < nx; k++) {
      double v = ds->x[i * ds->dim + cols[k]];
      if (open_ends ? (v > lo[k] && v < hi[k]) : (v >= lo[k] && v <= hi[k])) continue;
      if (bad++ == 0) bi = i, bj = k;
      break;
    }
  }
  if (!rc && bad)
    rc = die("--bounds: %s: row %zu, column %zu (1-based, a header not counted) is %.17g, "
             "outside %s%g, %g%s; %zu of its %zu rows are outside", what, bi + 1, cols[bj] + 1,
             ds->x[bi * ds->dim + cols[bj]], open_ends ? "(" : "[", lo[bj], hi[bj],
             open_ends ? ") (--logit 0 excludes the ends)" : "]", bad, ds->n);
  free(cols);
  free(lo);
  free(hi);
  return rc;
}

/* Reads the --test or --val file (option opt) into *out: columns as the
   data's (dim), rows inside --bounds; nonzero with a message otherwise. */
static int read_part_file(const cfg *c, const char *opt, const char *path, size_t dim,
                          nf_dataset **out)
{
  *out = NULL;
  nf_dataset *ds = NULL;
  if (read_file(path, &ds)) return die("%s %s: %s", opt, path, nf_errmsg());
  int rc = 0;
  if (ds->dim != dim) rc = die("%s %s: %zu columns, but %s has %zu", opt, path, ds->dim, c->data, dim);
  else if (c->bounds) rc = check_bounds(c, ds, path);
  if (rc) nf_dataset_free(ds);
  else *out = ds;
  return rc;
}

/* Training, validation and test parts: fresh toy points from three streams,
   or splits of a data file (test: --test FILE or a --test-frac split;
   validation: --val FILE or a --val-frac split of the training rows). */
static int load_data(const cfg *c, split *s)
{
  memset(s, 0, sizeof *s);
  nf_rng rng;
  nf_rng_seed(&rng, split_seed(c));
  nf_rng_jump(&rng); /* a stream apart from the flow's initialisation */
  double vf = isnan(c->val_frac) ? 0.1 : c->val_frac;
  nf_status st;
  if (is_toy(c->data)) {
    if (c->context_cols) return die("--context-cols needs a data file, not a toy set");
    if (c->test_file || c->val_file) return die("--test and --val need a data file, not a toy set");
    size_t n;
    if (mul_overflows(c->iters, c->batch, &n))
      return die("--iters %zu x --batch %zu training points overflow a size_t", c->iters,
                 c->batch);
    nf_rng val_rng = rng;
    for (int k = 0; k < 3; k++) nf_rng_jump(&val_rng);
    st = nf_toy_sample(c->data, n < TOY_MAX_TRAIN_POINTS ? n : TOY_MAX_TRAIN_POINTS, &rng,
                       &s->train.x);
    if (!st) st = toy_test(c->data, split_seed(c), &s->test.x);
    if (!st && vf > 0) st = nf_toy_sample(c->data, TOY_VAL_POINTS, &val_rng, &s->val.x);
    if (st) split_free(s);
    if (st) return die("--data %s: %s", c->data, nf_errmsg());
    char what[3][96];
    snprintf(what[0], sizeof what[0], "%s (training points)", c->data);
    snprintf(what[1], sizeof what[1], "%s (validation points)", c->data);
    snprintf(what[2], sizeof what[2], "%s (test points)", c->data);
    int rc = 0;
    if (c->bounds) rc = check_bounds(c, s->train.x, what[0]);
    if (!rc && c->bounds && s->val.x) rc = check_bounds(c, s->val.x, what[1]);
    if (!rc && c->bounds) rc = check_bounds(c, s->test.x, what[2]);
    if (rc) split_free(s);
    return rc;
  }
  nf_dataset *all = NULL, *trainval = NULL, *test = NULL, *train = NULL, *val = NULL;
  if (c->val_file && !isnan(c->val_frac)) return die("--val-frac does not apply with --val FILE");
  if ((st = read_file(c->data, &all))) return die("--data %s: %s", c->data, nf_errmsg());
  if (c->bounds && check_bounds(c, all, c->data)) {
    nf_dataset_free(all);
    return 2;
  }
  if (c->test_file) {
    if (!isnan(c->test_frac)) {
      nf_dataset_free(all);
      return die("--test-frac does not apply with --test FILE");
    }
    trainval = all;
    int rc = read_part_file(c, "--test", c->test_file, all->dim, &test);
    if (rc) {
      nf_dataset_free(all);
      return rc;
    }
  } else {
    double frac = isnan(c->test_frac) ? 0.2 : c->test_frac;
    st = nf_dataset_split(all, 1.0 - frac, &rng, &trainval, &test);
    nf_dataset_free(all);
    if (st) return die("--data %s: %s", c->data, nf_errmsg());
  }
  if (c->val_file) {
    train = trainval;
    int rc = read_part_file(c, "--val", c->val_file, trainval->dim, &val);
    if (rc) {
      nf_dataset_free(train), nf_dataset_free(test);
      return rc;
    }
  } else if (vf > 0) {
    st = nf_dataset_split(trainval, 1.0 - vf, &rng, &train, &val);
    nf_dataset_free(trainval);
    if (st) {
      nf_dataset_free(test);
      return die("--val-frac %g: %s", vf, nf_errmsg());
    }
  } else {
    train = trainval;
  }
  int rc = make_part(train, c->context_cols, c->data, &s->train);
  if (val) {
    if (!rc) rc = make_part(val, c->context_cols, c->data, &s->val);
    else nf_dataset_free(val);
  }
  if (!rc) rc = make_part(test, c->context_cols, c->test_file ? c->test_file : c->data, &s->test);
  else nf_dataset_free(test);
  if (rc) split_free(s);
  return rc;
}

/* The progress line's state: when it was last drawn and where the run began. */
typedef struct progress_line {
  double drawn_at;   /* run seconds at the last redraw; negative before the first */
  size_t first_iter; /* the iteration the run started from (a resumed run's count) */
} progress_line;

/* "1h02m", "3m07s" or "12s" for a duration in seconds. */
static void format_duration(double t, char *buf, size_t size)
{
  long s = t > 0 && t < 1e9 ? (long)(t + 0.5) : 0;
  if (s >= 3600) snprintf(buf, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else if (s >= 60) snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
  else snprintf(buf, size, "%lds", s);
}

/* The progress line on stderr, redrawn at most 10 times a second and at the
   last iteration: a bar, iteration/total, the smoothed loss, the latest
   validation NLL, iterations per second and the time left (and the draws'
   ESS when training against a target). */
static void draw_progress(const nf_train_progress *p, const char *name, progress_line *line)
{
  int last = p->iteration == p->total;
  if (!last && line->drawn_at >= 0 && p->seconds - line->drawn_at < 0.1) return;
  line->drawn_at = p->seconds;
  size_t done = p->iteration - line->first_iter;
  double rate = p->seconds > 0 ? (double)done / p->seconds : 0;
  char eta[48] = "-", val[32] = "", ess[16] = "";
  if (rate > 0) format_duration((double)(p->total - p->iteration) / rate, eta, sizeof eta);
  if (!isnan(p->val_nll)) snprintf(val, sizeof val, "  val %.4f", p->val_nll);
  if (!isnan(p->ess)) snprintf(ess, sizeof ess, "  ess %.3f", p->ess);
  int width = 20, filled = (int)(width * p->iteration / p->total);
  fprintf(stderr, "\r%-8s [%.*s%*s] %zu/%zu  loss %.4f%s%s  %.1f it/s  ETA %s   ", name, filled,
          "####################", width - filled, "", p->iteration, p->total,
          isnan(p->loss_smoothed) ? p->loss : p->loss_smoothed, val, ess, rate, eta);
  if (last) fputc('\n', stderr);
}

/* Sums the counters of the flow's CNF layers; 0 if it has none. */
static int cnf_totals(nf_flow *flow, nf_cnf_counters *sum)
{
  memset(sum, 0, sizeof *sum);
  int found = 0;
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++) {
    nf_cnf_counters one;
    if (nf_cnf_get_counters(nf_flow_layer(flow, k), &one)) continue;
    found = 1;
    sum->nfe += one.nfe;
    sum->nfe_adjoint += one.nfe_adjoint;
  }
  return found;
}

/* ---- test log-likelihood ---- */

/* The held-out summary of per-row log-densities. */
typedef struct nll_summary {
  size_t rows, nonfinite, worst_row;
  double mean, stderr_, median; /* over the finite rows */
} nll_summary;

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Mean, standard error and median NLL of the finite log p, the count of
   non-finite ones and the worst row (a NaN first, else the lowest log p). */
static nll_summary summarize(size_t n, const double *logp)
{
  nll_summary s = {.rows = n, .mean = NAN, .stderr_ = NAN, .median = NAN};
  double *v = malloc(n * sizeof *v), sum = 0, ss = 0;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (isfinite(logp[i])) {
      if (v) v[m] = -logp[i];
      m++;
      sum += -logp[i];
    } else if (s.nonfinite++ == 0 || isnan(logp[i]) ||
               (!isnan(logp[s.worst_row]) && logp[i] < logp[s.worst_row])) {
      if (s.nonfinite == 1 || !isnan(logp[s.worst_row])) s.worst_row = i;
    }
  }
  if (m) {
    s.mean = sum / (double)m;
    for (size_t i = 0; i < n; i++)
      if (isfinite(logp[i])) ss += (-logp[i] - s.mean) * (-logp[i] - s.mean);
    s.stderr_ = m > 1 ? sqrt(ss / (double)(m - 1) / (double)m) : 0.0;
    if (v) {
      qsort(v, m, sizeof *v, cmp_double);
      s.median = m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
    }
  }
  free(v);
  return s;
}

/* Prints the summary as key=value lines (prefixed); nonzero (with a message
   on stderr) if a row's log-density is not finite. */
static int print_summary(const char *prefix, const nll_summary *s)
{
  if (s->nonfinite == 0) printf("%stest_nll=%.6f\n", prefix, s->mean);
  printf("%stest_nll_stderr=%.6f\n%stest_nll_median=%.6f\n%stest_rows=%zu\n", prefix,
         s->stderr_, prefix, s->median, prefix, s->rows);
  if (s->nonfinite == 0) return 0;
  printf("%stest_nll_finite=%.6f\n%stest_nonfinite_rows=%zu\n%stest_worst_row=%zu\n", prefix,
         s->mean, prefix, s->nonfinite, prefix, s->worst_row);
  fprintf(stderr, "nflow: %zu of %zu test rows have a non-finite log-density (worst: row %zu, "
          "0-based); test_nll_finite is the mean over the others\n", s->nonfinite, s->rows,
          s->worst_row);
  return 1;
}

/* log p of every row of p (the flow's noise seed 0, as eval uses). */
static int log_densities(nf_flow *flow, const part *p, double **logp)
{
  *logp = malloc(p->x->n * sizeof **logp);
  if (!*logp) return die("out of memory");
  nf_flow_set_seed(flow, 0);
  if (nf_flow_log_prob(flow, p->x->n, p->x->x, p->y ? p->y->x : NULL, *logp)) {
    free(*logp);
    *logp = NULL;
    return die("evaluate: %s", nf_errmsg());
  }
  return 0;
}

/* ---- train ---- */

/* What one trained flow reports. */
typedef struct result {
  const char *flow;
  size_t params, iters, restored;
  double train_nll, val_nll, seconds, ms_per_iter, nfe_forward, nfe_backward, end_time;
  int continuous, stop;
  nf_trace_kind trace; /* a CNF's training trace (evaluation takes the exact one up to d = 128) */
  int diverged; /* the trainer's divergence mark (warned on stderr once) */
  char stop_reason[160];
  nll_summary test;
} result;

/* The provenance saved with a model. */
static nf_meta *provenance(const cfg *c, const result *r)
{
  nf_meta *m = nf_meta_new();
  char buf[64];
  if (!m) return NULL;
  nf_meta_set(m, "data", c->data);
  if (c->test_file) nf_meta_set(m, "test_data", c->test_file);
  if (c->val_file) nf_meta_set(m, "validation_data", c->val_file);
  if (c->context_cols) nf_meta_set(m, "context_cols", c->context_cols);
  nf_meta_set(m, "flow", c->flow);
  nf_meta_set(m, "preprocess", preprocess_kind(c));
  if (c->bounds) nf_meta_set(m, "bounds", c->bounds);
#define META(key, fmt, v) (snprintf(buf, sizeof buf, fmt, v), nf_meta_set(m, key, buf))
  META("iterations", "%zu", r->iters);
  META("seed", "%zu", c->seed_plus_one - 1);
  META("split_seed", "%" PRIu64, split_seed(c));
  META("batch", "%zu", c->batch);
  META("train_nll", "%.17g", r->train_nll);
  META("val_nll", "%.17g", r->val_nll);
  META("test_nll", "%.17g", r->test.nonfinite ? NAN : r->test.mean);
  META("restored_iteration", "%zu", r->restored);
  if (c->bounds) META("logit_alpha", "%.17g", logit_alpha(c));
#undef META
  return m;
}

/* What the trainer's progress callback does for a run of the command: the
   progress bar (on a terminal), whole-state checkpoints every --eval-every
   iterations and at the end, and --stop-after. */
typedef struct run_ctl {
  const cfg *c;
  nf_trainer *trainer;
  size_t every;   /* checkpoint period; 0: at the end (and at --stop-after) only */
  size_t stop_at; /* iteration at which --stop-after stops; 0: never */
  size_t saved_at; /* iteration of the last checkpoint written; 0: none */
  int tty, failed, stopped_after;
  progress_line line; /* the progress line drawn when tty */
} run_ctl;

static int on_progress(const nf_train_progress *p, void *user)
{
  run_ctl *ctl = user;
  if (ctl->tty) draw_progress(p, ctl->c->flow, &ctl->line);
  int stop = ctl->stop_at && p->iteration >= ctl->stop_at;
  if (ctl->c->checkpoint &&
      ((ctl->every && p->iteration % ctl->every == 0) || p->iteration == p->total || stop)) {
    if (agree(is_root() && nf_trainer_save_state(ctl->trainer, ctl->c->checkpoint),
              "--checkpoint")) {
      ctl->failed = 1;
      return 1;
    }
    ctl->saved_at = p->iteration;
  }
  ctl->stopped_after = stop;
  return stop;
}

/* The options a --resume must share with the run that wrote the checkpoint
   (all but the length and bookkeeping of the run), as the state's tag. */
static void state_tag(const cfg *c, char *buf, size_t size)
{
  char hidden[MAX_HIDDEN * 12] = "";
  for (size_t k = 0; k < c->n_hidden; k++) {
    size_t len = strlen(hidden);
    snprintf(hidden + len, sizeof hidden - len, "%s%zu", k ? "," : "", c->hidden[k]);
  }
  snprintf(buf, size,
           "flow=%s layers=%zu hidden=%s act=%s batch=%zu lr=%.17g schedule=%s "
           "weight_decay=%.17g clip=%.17g scale_bound=%.17g bins=%zu tail_bound=%.17g components=%zu "
           "mixing=%s seed=%zu split_seed=%" PRIu64 " "
           "data=%s test=%s val=%s test_frac=%.17g val_frac=%.17g context_cols=%s preprocess=%s "
           "bounds=%s alpha=%.17g dynamics=%s end_time=%.17g fixed_end_time=%zu solver=%s "
           "rtol=%.17g atol=%.17g steps=%zu grad_mode=%s trace=%s kinetic=%.17g jacobian=%.17g "
           "target=%s target_lib=%s target_dim=%zu lattice=%zu mass2=%.17g lambda=%.17g estimator=%s "
           "anneal=%zu anneal_beta0=%.17g",
           c->flow, c->layers, hidden, c->act, c->batch, c->lr, c->schedule, c->weight_decay,
           c->clip, c->scale_bound, c->bins, c->tail_bound, c->components,
           c->mixing ? c->mixing : "-", c->seed_plus_one - 1, split_seed(c), c->data ? c->data : "-",
           c->test_file ? c->test_file : "-", c->val_file ? c->val_file : "-", c->test_frac, c->val_frac,
           c->context_cols ? c->context_cols : "-", preprocess_kind(c),
           c->bounds ? c->bounds : "-", c->bounds ? logit_alpha(c) : NAN,
           c->dynamics ? c->dynamics : "-", c->end_time, c->fixed_T,
           c->solver ? c->solver : "-", c->rtol, c->atol, c->max_steps,
           c->grad_mode ? c->grad_mode : "-", c->trace ? c->trace : "-", c->kinetic, c->jacobian,
           c->target ? c->target : "-", c->target_lib ? c->target_lib : "-", c->target_dim,
           c->lattice, c->mass2, c->lambda, c->estimator ? c->estimator : "-", c->anneal_plus_one,
           c->anneal_beta0);
}

/* Validations without improvement before training stops: --patience, else
   DEFAULT_PATIENCE on a file (a finite table a flow can overfit; the best
   validated parameters are restored) and never on a toy set (fresh points). */
#define DEFAULT_PATIENCE 10
static size_t patience(const cfg *c)
{
  if (c->patience_plus_one) return c->patience_plus_one - 1;
  return is_toy(c->data) ? 0 : DEFAULT_PATIENCE;
}

/* Validation and curve period: --eval-every, else iters / 50. */
static size_t eval_period(const cfg *c)
{
  return c->eval_every ? c->eval_every : (c->iters / 50 ? c->iters / 50 : 1);
}

/* The optimizer, the trainer's options (progress, checkpoints, the curve
   file, opened here) and the resume tag of a run per c; 0 or an exit status. */
static int trainer_setup(const cfg *c, nf_flow *flow, run_ctl *ctl, nf_adam **adam,
                         nf_trainer_opts *topts, char *tag, size_t tag_size, FILE **curve)
{
  nf_adam_opts aopts = nf_adam_defaults();
  aopts.lr = c->lr;
  aopts.weight_decay = c->weight_decay;
  aopts.clip_norm = c->clip;
  nf_lr_schedule schedule;
  if (nf_lr_schedule_parse(c->schedule, &schedule)) return die("--schedule: %s", nf_errmsg());
  state_tag(c, tag, tag_size);
  *ctl = (run_ctl){.c = c, .every = c->eval_every, .tty = isatty(STDERR_FILENO) && !c->quiet,
                   .line = {-1.0, 0}};
  *topts = nf_trainer_defaults();
  topts->batch_size = c->batch;
  topts->threads = c->threads;
  topts->iterations = c->iters;
  topts->callback = on_progress;
  topts->user = ctl;
  topts->state_tag = tag;
  topts->schedule = schedule;
  *curve = NULL;
  if (c->curve && is_root() && !(*curve = fopen(c->curve, "w")))
    return die("--curve %s: %s", c->curve, strerror(errno));
  topts->curve_every = c->curve ? eval_period(c) : 0;
  topts->curve_csv = *curve;
  *adam = nf_adam_new(nf_flow_n_params(flow), &aopts);
  if (!*adam) {
    if (*curve) fclose(*curve);
    return die("train %s: %s", c->flow, nf_errmsg());
  }
  return 0;
}

/* Resumes (--resume), runs the trainer to the end or --stop-after, writes the
   last checkpoint and closes the curve; fills report; 0 or an exit status. */
static int run_trainer(const cfg *c, nf_trainer *trainer, run_ctl *ctl, FILE *curve,
                       nf_train_report *report, size_t *start)
{
  ctl->trainer = trainer;
  int rc = 0;
  if (agree(c->resume && nf_trainer_load_state(trainer, c->resume), "--resume"))
    rc = die("--resume: %s (resume with the options and data of the run that wrote it)",
             nf_errmsg());
  *start = nf_trainer_iterations(trainer);
  ctl->line.first_iter = *start;
  if (!rc && c->stop_after) ctl->stop_at = *start + c->stop_after;
  if (!rc && nf_trainer_run(trainer, report) && !ctl->failed)
    rc = die("train %s: %s", c->flow, nf_errmsg());
  if (!rc && ctl->failed) rc = die("--checkpoint: %s", nf_errmsg());
  if (curve && fclose(curve) && !rc) rc = die("--curve %s: %s", c->curve, strerror(errno));
  /* a run that ended otherwise (patience, a resumed run already complete)
     leaves its state too */
  if (!rc && c->checkpoint && ctl->saved_at != report->iterations &&
      agree(is_root() && nf_trainer_save_state(trainer, c->checkpoint), "--checkpoint"))
    rc = die("--checkpoint: %s", nf_errmsg());
  if (!rc && ctl->stopped_after)
    snprintf(report->stop_reason, sizeof report->stop_reason,
             "--stop-after %zu at iteration %zu (continue with --resume %s)", c->stop_after,
             report->iterations, c->checkpoint);
  return rc;
}

/* The run's figures from its report: iterations, time and CNF counts per
   step of this invocation (a resumed run did the others before). */
static int fill_result(const cfg *c, nf_flow *flow, const nf_train_report *report,
                       size_t start, result *r)
{
  nf_cnf_counters counters;
  r->continuous = cnf_totals(flow, &counters);
  if (r->continuous && cnf_trace(c, nf_flow_dim(flow), &r->trace)) return 1;
  r->iters = report->iterations;
  r->restored = report->restored_iteration;
  r->stop = report->stopped;
  snprintf(r->stop_reason, sizeof r->stop_reason, "%s", report->stop_reason);
  r->seconds = report->seconds;
  r->val_nll = report->val_nll_best;
  r->diverged = report->diverged;
  if (report->diverged)
    fprintf(stderr, "nflow: warning: training diverged at iteration %zu: smoothed loss %.6g "
            "is more than %g*d = %g nats above its best %.6g; lower --lr (flow %s)\n",
            report->diverged_iteration, report->diverged_loss, NF_TRAIN_DIVERGE_NATS,
            NF_TRAIN_DIVERGE_NATS * (double)nf_flow_dim(flow), report->diverged_best, c->flow);
  double it = report->iterations > start ? (double)(report->iterations - start) : 1.0;
  /* per training step: validation and curve points are not counted */
  r->ms_per_iter = 1e3 * report->step_seconds / it;
  r->nfe_forward = report->step_nfe / it;
  r->nfe_backward = report->step_nfe_adjoint / it;
  r->end_time = r->continuous ? nf_cnf_end_time(nf_flow_layer(flow, 0), nf_flow_params(flow) + nf_flow_param_offset(flow, 0)) : NAN;
  r->flow = c->flow;
  r->params = nf_flow_n_params(flow);
  return 0;
}

/* A view of rows [n r / P, n (r + 1) / P) of p for rank r of P (NULL if none). */
static void shard_part(const part *p, part *out)
{
  out->x = out->y = NULL;
  if (!p->x) return;
  size_t n = p->x->n, P = g_comm->size, r = g_comm->rank, lo = n * r / P, hi = n * (r + 1) / P;
  if (hi == lo) return;
  out->x = nf_dataset_view(hi - lo, p->x->dim, p->x->x + lo * p->x->dim);
  if (p->y) out->y = nf_dataset_view(hi - lo, p->y->dim, p->y->x + lo * p->y->dim);
}

/* The training and validation rows this process trains on: all of them, or
   under mpirun this rank's contiguous shard of each (views into s). */
static void shard_views(const split *s, split *out)
{
  memset(out, 0, sizeof *out);
  if (!g_comm) {
    out->train = s->train, out->val = s->val;
    return;
  }
  shard_part(&s->train, &out->train);
  shard_part(&s->val, &out->val);
}

static void shard_free(split *sh)
{
  if (!g_comm) return;
  part_free(&sh->train);
  part_free(&sh->val);
}

/* Trains flow per c on the split, evaluates on its test part, fills r. */
static int train_and_test(const cfg *c, nf_flow *flow, const split *s, nf_rng *rng, result *r)
{
  nf_adam *adam = NULL;
  nf_trainer_opts topts;
  run_ctl ctl;
  char tag[2048];
  FILE *curve = NULL;
  int rc = trainer_setup(c, flow, &ctl, &adam, &topts, tag, sizeof tag, &curve);
  if (rc) return rc;
  topts.val_every = s->val.x ? eval_period(c) : 0;
  topts.restore_best = !c->no_restore_best;
  topts.patience = patience(c);
  split sh;
  shard_views(s, &sh);
  nf_trainer *trainer = nf_trainer_new(flow, adam, sh.train.x, sh.val.x, &topts, rng);
  if (!trainer) rc = die("train %s: %s", c->flow, nf_errmsg());
  if (!rc && sh.train.y && nf_trainer_set_context(trainer, sh.train.y, sh.val.y))
    rc = die("train %s: %s", c->flow, nf_errmsg());
  rc = agree(rc, "train");
  if (!rc && g_comm && nf_trainer_set_comm(trainer, g_comm))
    rc = die("train %s: %s", c->flow, nf_errmsg());
  nf_train_report report;
  size_t start = 0;
  if (!rc) rc = run_trainer(c, trainer, &ctl, curve, &report, &start);
  else if (curve) fclose(curve);
  if (!rc) rc = fill_result(c, flow, &report, start, r);
  if (!rc) {
    size_t m = s->train.x->n < TRAIN_NLL_ROWS ? s->train.x->n : TRAIN_NLL_ROWS;
    nf_flow_set_seed(flow, 0);
    if (nf_flow_nll(flow, m, s->train.x->x, s->train.y ? s->train.y->x : NULL, &r->train_nll))
      rc = die("evaluate %s: %s", c->flow, nf_errmsg());
    double *logp = NULL;
    if (!rc && !(rc = log_densities(flow, &s->test, &logp))) r->test = summarize(s->test.x->n, logp);
    free(logp);
  }
  r->flow = c->flow;
  r->params = nf_flow_n_params(flow);
  nf_trainer_free(trainer);
  nf_adam_free(adam);
  shard_free(&sh);
  return rc;
}

/* Appends c's preprocessing to flow, last in sampling order: a logit over
   --bounds, or a standardisation fitted on the training rows only. */
static int add_preprocess(const cfg *c, const part *train, nf_flow *flow)
{
  const char *kind = preprocess_kind(c);
  size_t d = train->x->dim;
  if (!strcmp(kind, "none")) return 0;
  double *a = malloc(d * sizeof *a), *b = malloc(d * sizeof *b);
  nf_layer *layer = NULL;
  int rc = a && b ? 0 : die("out of memory");
  if (!rc && !strcmp(kind, "logit")) {
    rc = parse_bounds(c->bounds, d, a, b);
    if (!rc && !(layer = nf_logit_new(d, a, b, logit_alpha(c))))
      rc = die("--bounds: %s", nf_errmsg());
  } else if (!rc && (nf_standardize_fit(train->x->n, d, train->x->x, a, b) ||
                     !(layer = nf_standardize_new(d, a, b)))) {
    rc = die("--standardize: %s", nf_errmsg());
  }
  if (!rc && nf_flow_push(flow, layer)) rc = die("%s: %s", kind, nf_errmsg());
  free(a);
  free(b);
  return rc;
}

/* --max-memory: refuses (naming the estimate) a flow whose training would hold
   more than c->max_memory bytes of doubles in theta, its gradient, the Adam
   moments, the trainer's copies (candidate, live, best) and batch buffers:
   the gathered rows and, per layer, the hidden activations (of the
   conditioner or ODE net; planar and radial have none) and their gradients. A CNF's solver workspace comes on top and is not counted. */
static int check_memory(const cfg *c, const nf_flow *flow, const split *s)
{
  if (!c->max_memory) return 0;
  size_t np = nf_flow_n_params(flow), dim = s->train.x->dim, ctx = s->train.y ? s->train.y->dim : 0;
  size_t b = c->batch < s->train.x->n ? c->batch : s->train.x->n, width = 2 * dim + ctx;
  int no_net = !strcmp(c->flow, "planar") || !strcmp(c->flow, "radial");
  for (size_t k = 0; !no_net && k < c->n_hidden; k++) width += c->hidden[k];
  size_t copies = c->no_restore_best ? 6 : 7, p_bytes, act, b_bytes = 0, total = 0;
  int over = mul_overflows(np, copies * sizeof(double), &p_bytes) ||
             mul_overflows(b, width, &act) || mul_overflows(act, 2 * c->layers, &act) ||
             mul_overflows(act + b * (dim + ctx), sizeof(double), &b_bytes) ||
             (total = p_bytes + b_bytes) < p_bytes;
  if (!over && total <= c->max_memory) return 0;
  return die("--max-memory %zu: training %s needs an estimated %s%zu bytes (%zu parameters x "
             "%zu copies: theta, gradient, Adam moments, trainer; %zu bytes of batch buffers)",
             c->max_memory, c->flow, over ? "more than " : "", over ? (size_t)SIZE_MAX : total,
             np, copies, b_bytes);
}

/* Pictures (defined with cmd_plot, below): the hooks of train and compare. */
static int pictures_begin(cfg *c, size_t compare_flows);
static int picture_flow(const cfg *c, nf_flow *flow, const split *s, const result *r);
static int picture_target(const cfg *c, nf_flow *flow, const nf_target *target);
static int pictures_end(int rc);

/* Builds, trains and tests one flow on the given split; saves it to out if not NULL. */
static int run_flow(cfg c, const split *s, const char *out, result *r)
{
  fill_defaults(&c);
  nf_rng rng;
  nf_rng_seed(&rng, c.seed_plus_one - 1);
  nf_flow *flow = NULL;
  int rc = build_flow(&c, s->train.x->dim, s->train.y ? s->train.y->dim : 0, &rng, &flow);
  if (!rc) rc = add_preprocess(&c, &s->train, flow);
  if (!rc) rc = check_memory(&c, flow, s);
  if (!rc) rc = train_and_test(&c, flow, s, &rng, r);
  if (!rc && is_root()) rc = picture_flow(&c, flow, s, r);
  if (g_comm) rc = agree(rc, "--png");
  if (!rc && out) {
    nf_meta *meta = is_root() ? provenance(&c, r) : NULL;
    if (is_root() && (!meta || nf_flow_save(flow, out, meta))) rc = die("--out: %s", nf_errmsg());
    rc = agree(rc, "--out");
    nf_meta_free(meta);
  }
  nf_flow_free(flow);
  return rc;
}

/* key=value lines of one result, each key prefixed by prefix; nonzero if the
   test NLL is not finite. */
static int print_keys(const char *prefix, const result *r)
{
  printf("%sparams=%zu\n%siters=%zu\n%strain_nll=%.6f\n", prefix, r->params, prefix, r->iters,
         prefix, r->train_nll);
  if (!isnan(r->val_nll)) printf("%sval_nll=%.6f\n", prefix, r->val_nll);
  if (r->restored) printf("%srestored_iteration=%zu\n", prefix, r->restored);
  if (r->stop) printf("%sstopped_early=%s\n", prefix, r->stop_reason);
  printf("%sdiverged=%d\n", prefix, r->diverged);
  int rc = print_summary(prefix, &r->test);
  printf("%strain_seconds=%.3f\n%sms_per_iter=%.4f\n", prefix, r->seconds, prefix, r->ms_per_iter);
  if (r->continuous) {
    printf("%snfe_forward=%.2f\n%snfe_backward=%.2f\n%send_time=%.6f\n", prefix, r->nfe_forward,
           prefix, r->nfe_backward, prefix, r->end_time);
    printf("%strain_trace=%s\n", prefix, nf_cnf_trace_name(r->trace));
  }
  return rc;
}

/* Reverse KL is mode-seeking: a flow that starts as N(0, I) and sees a
   multimodal target at full strength tends to settle in one mode (a CNF on
   the double well keeps 98% of its mass in one). Tempering the target over
   the first half of training, beta from 0.1 to 1, keeps both (measured:
   ESS 0.98, modes 0.499 / 0.501). */
#define DEFAULT_ANNEAL_BETA0 0.1
/* Draws per step of --target training, for every flow (a CNF's data default is
   FFJORD's 100): with 100 the CNF on the double well still lost a mode on one
   seed of three, with 256 on none. */
#define TARGET_BATCH 256
static size_t anneal_iterations(const cfg *c)
{
  return c->anneal_plus_one ? c->anneal_plus_one - 1 : c->iters / 2;
}

/* The target of --target or --target-lib; 0 or an exit status. */
static int open_target(const cfg *c, tool_target *t)
{
  target_spec spec = {c->target, c->target_lib, c->target_dim, c->lattice, c->mass2, c->lambda};
  return tool_target_open(&spec, t);
}

/* train --target: reverse KL against the target, no data; prints the run's
   figures and the importance-sampling report of -n fresh samples. */
static int cmd_train_target(cfg *c)
{
  if (!c->flow) c->flow = "realnvp";
  int scope = check_scope(c->flow);
  if (scope) return scope;
  static const char *const data_only[] = {"--data", "--test", "--val", "--val-frac", "--test-frac",
      "--context-cols", "--standardize", "--bounds", "--patience", "--split-seed"};
  for (size_t k = 0; k < sizeof data_only / sizeof *data_only; k++)
    if (given[find_option(data_only[k]) - opt_specs])
      return die("%s does not apply to --target training (reverse KL needs no data)", data_only[k]);
  nf_objective objective = nf_objective_reverse_kl(NULL);
  if (c->estimator && nf_grad_estimator_parse(c->estimator, &objective.estimator))
    return die("--estimator: %s", nf_errmsg());
  tool_target t;
  int rc = open_target(c, &t);
  if (rc) return rc;
  objective.target = t.target;
  cfg f = *c;
  if (!f.batch) f.batch = TARGET_BATCH;
  fill_defaults(&f);
  nf_rng rng;
  nf_rng_seed(&rng, f.seed_plus_one - 1);
  nf_flow *flow = NULL;
  nf_adam *adam = NULL;
  nf_trainer *trainer = NULL;
  nf_trainer_opts topts;
  run_ctl ctl;
  char tag[2048];
  FILE *curve = NULL;
  size_t dim = nf_target_dim(t.target), start = 0;
  rc = build_flow(&f, dim, 0, &rng, &flow);
  if (!rc) rc = trainer_setup(&f, flow, &ctl, &adam, &topts, tag, sizeof tag, &curve);
  if (!rc) {
    topts.objective = &objective;
    topts.anneal_iterations = anneal_iterations(&f);
    topts.anneal_beta0 = isnan(f.anneal_beta0) ? DEFAULT_ANNEAL_BETA0 : f.anneal_beta0;
    if (!(trainer = nf_trainer_new(flow, adam, NULL, NULL, &topts, &rng)))
      rc = die("train %s: %s", f.flow, nf_errmsg());
  }
  nf_train_report report;
  result r = {.val_nll = NAN};
  if (!rc) rc = run_trainer(&f, trainer, &ctl, curve, &report, &start);
  else if (curve) fclose(curve);
  if (!rc) rc = fill_result(&f, flow, &report, start, &r);
  if (!rc) {
    printf("flow=%s\ndim=%zu\nobjective=reverse_kl\nestimator=%s\nbatch=%zu\nseed=%zu\n", f.flow,
           dim, nf_grad_estimator_name(objective.estimator), f.batch, f.seed_plus_one - 1);
    printf("anneal=%zu\nanneal_beta0=%g\n", topts.anneal_iterations, topts.anneal_beta0);
    printf("params=%zu\niters=%zu\nloss=%.6f\ntrain_ess=%.6f\ndiverged=%d\ntrain_seconds=%.3f\n"
           "ms_per_iter=%.4f\n", r.params, r.iters, report.train_loss, report.ess_last, r.diverged,
           r.seconds, r.ms_per_iter);
    if (r.continuous)
      printf("nfe_forward=%.2f\nnfe_backward=%.2f\nend_time=%.6f\ntrain_trace=%s\n", r.nfe_forward,
             r.nfe_backward, r.end_time, nf_cnf_trace_name(r.trace));
    rc = tool_target_report(flow, &t, &rng, c->n_samples ? c->n_samples : TARGET_REPORT_SAMPLES);
  }
  if (!rc) rc = picture_target(&f, flow, t.target);
  if (!rc && c->out) {
    nf_meta *meta = nf_meta_new();
    if (!meta || nf_meta_set(meta, "target", t.label) || nf_meta_set(meta, "flow", f.flow) ||
        nf_flow_save(flow, c->out, meta))
      rc = die("--out: %s", nf_errmsg());
    else
      printf("model=%s\n", c->out);
    nf_meta_free(meta);
  }
  nf_trainer_free(trainer);
  nf_adam_free(adam);
  nf_flow_free(flow);
  tool_target_close(&t);
  return rc;
}

/* Refuses the options of --target training in a run on data. */
static int refuse_target_options(void)
{
  static const char *const target_only[] = {"--target", "--target-lib", "--dim", "--lattice",
      "--mass2", "--lambda", "--anneal", "--anneal-beta0", "--estimator"};
  for (size_t k = 0; k < sizeof target_only / sizeof *target_only; k++)
    if (given[find_option(target_only[k]) - opt_specs])
      return die("%s applies to train --target only", target_only[k]);
  return 0;
}

static int cmd_train_data(cfg *c);

/* train: on data or against a target, with its pictures (--png). */
static int cmd_train(cfg *c)
{
  int rc = pictures_begin(c, 0);
  if (!rc) rc = c->target || c->target_lib ? cmd_train_target(c) : cmd_train_data(c);
  return pictures_end(rc);
}

static int cmd_train_data(cfg *c)
{
  if (!c->flow) c->flow = "realnvp";
  int rc = check_scope(c->flow);
  if (!rc) rc = refuse_target_options();
  if (!rc) rc = check_run_options(c);
  if (rc) return rc;
  cfg filled = *c;
  fill_defaults(&filled);
  split s;
  rc = load_data(&filled, &s);
  result r;
  if (!rc && !(rc = run_flow(*c, &s, c->out, &r))) {
    size_t batch = filled.batch < s.train.x->n ? filled.batch : s.train.x->n;
    printf("flow=%s\ndata=%s\ndim=%zu\npreprocess=%s\n", filled.flow, c->data, s.train.x->dim,
           preprocess_kind(c));
    if (s.train.y) printf("context_dim=%zu\n", s.train.y->dim);
    printf("train_rows=%zu\nval_rows=%zu\nbatch=%zu\nseed=%zu\nsplit_seed=%" PRIu64 "\n",
           s.train.x->n, s.val.x ? s.val.x->n : 0, batch, c->seed_plus_one - 1, split_seed(c));
    rc = print_keys("", &r);
    if (c->out) printf("model=%s\n", c->out);
  }
  split_free(&s);
  return rc;
}

static int cmd_compare(cfg *c)
{
  char names[256];
  const char *flow[MAX_FLOWS];
  size_t k = 0;
  int rc = parse_flows(c->flows ? c->flows : "realnvp,cnf", names, sizeof names, flow, &k);
  if (!rc) rc = refuse_target_options();
  if (rc) return rc;
  if (c->out || c->resume || c->checkpoint || c->curve || c->stop_after)
    return die("%s does not apply to compare", c->out ? "--out (use --out-dir)" :
               c->resume ? "--resume" : c->checkpoint ? "--checkpoint" :
               c->curve ? "--curve" : "--stop-after");
  rc = check_run_options(c);
  if (rc) return rc;
  if (c->out_dir && mkdir(c->out_dir, 0777) && errno != EEXIST)
    return die("--out-dir %s: %s", c->out_dir, strerror(errno));
  note_scope(k, flow);
  if ((rc = pictures_begin(c, k))) return pictures_end(rc);
  cfg first = *c;
  first.flow = flow[0];
  fill_defaults(&first); /* the split follows the first flow's batch and iterations */
  split s;
  rc = load_data(&first, &s);
  result r[MAX_FLOWS];
  for (size_t i = 0; !rc && i < k; i++) {
    cfg one = *c;
    one.flow = flow[i];
    char path[4096];
    if (c->out_dir) snprintf(path, sizeof path, "%s/%s.safetensors", c->out_dir, flow[i]);
    rc = run_flow(one, &s, c->out_dir ? path : NULL, &r[i]);
  }
  if (!rc) {
    printf("data=%s  dim=%zu  train=%zu  val=%zu  test=%zu  preprocess=%s\n", c->data,
           s.train.x->dim, s.train.x->n, s.val.x ? s.val.x->n : 0, s.test.x->n,
           preprocess_kind(c));
    printf("%-10s %9s %10s %10s %10s %8s %8s\n", "flow", "params", "test_nll", "train_s",
           "ms/iter", "nfe_fwd", "nfe_bwd");
    for (size_t i = 0; i < k; i++) {
      printf("%-10s %9zu %10.4f %10.2f %10.3f", r[i].flow, r[i].params, r[i].test.mean,
             r[i].seconds, r[i].ms_per_iter);
      if (r[i].continuous) printf(" %8.1f %8.1f\n", r[i].nfe_forward, r[i].nfe_backward);
      else printf(" %8s %8s\n", "-", "-");
    }
    printf("preprocess=%s\n", preprocess_kind(c));
    for (size_t i = 0; i < k; i++) {
      char prefix[64];
      snprintf(prefix, sizeof prefix, "%s.", r[i].flow);
      rc |= print_keys(prefix, &r[i]);
    }
  }
  split_free(&s);
  return pictures_end(rc);
}

/* ---- eval, sample, info ---- */

/* Loads the --model file. */
static int load_model(const cfg *c, nf_flow **flow, nf_meta **meta)
{
  if (!c->model) return die("--model is required");
  if (nf_flow_load(c->model, NULL, flow, meta)) return die("--model: %s", nf_errmsg());
  if (nf_flow_set_threads(*flow, c->threads)) return die("--threads: %s", nf_errmsg());
  return 0;
}

/* Writes n x d values to path: .npy by extension, else CSV. */
static nf_status write_rows(const char *path, size_t n, size_t d, double *v)
{
  size_t len = strlen(path);
  int npy = len >= 4 && !strcmp(path + len - 4, ".npy");
  if (d == 0) return npy ? nf_write_column_npy(path, n, v) : nf_write_column_csv(path, n, v);
  nf_dataset *ds = nf_dataset_view(n, d, v);
  if (!ds) return nf_last_status();
  nf_status st = npy ? nf_dataset_write_npy(ds, path) : nf_dataset_write_csv(ds, path);
  nf_dataset_free(ds);
  return st;
}

/* The rows eval evaluates: a toy set's held-out stream (the model's split
   seed unless --split-seed), or every row of a file (context columns as the
   model was trained with). */
static int eval_data(const cfg *c, const nf_flow *flow, const nf_meta *meta, part *p)
{
  memset(p, 0, sizeof *p);
  nf_status st;
  if (is_toy(c->data)) {
    uint64_t seed = 1;
    const char *ss = nf_meta_get(meta, "split_seed");
    if (c->split_seed_plus_one) seed = c->split_seed_plus_one - 1;
    else if (ss) seed = strtoull(ss, NULL, 10);
    st = toy_test(c->data, seed, &p->x);
    return st ? die("--data %s: %s", c->data, nf_errmsg()) : 0;
  }
  nf_dataset *all;
  if (read_file(c->data, &all)) return die("--data %s: %s", c->data, nf_errmsg());
  const char *cols = c->context_cols ? c->context_cols : nf_meta_get(meta, "context_cols");
  int rc = make_part(all, nf_flow_ctx_dim(flow) ? cols : NULL, c->data, p);
  if (!rc && p->x->dim != nf_flow_dim(flow))
    rc = die("--data %s: %zu data columns, but the model is on R^%zu", c->data, p->x->dim,
             nf_flow_dim(flow));
  if (!rc && nf_flow_ctx_dim(flow) && (!p->y || p->y->dim != nf_flow_ctx_dim(flow)))
    rc = die("--data %s: the model is conditional on %zu columns: give them with --context-cols",
             c->data, nf_flow_ctx_dim(flow));
  if (rc) part_free(p);
  return rc;
}

static int cmd_eval(cfg *c)
{
  nf_flow *flow = NULL;
  nf_meta *meta = NULL;
  int rc = load_model(c, &flow, &meta);
  part p = {0};
  double *logp = NULL;
  if (!rc) rc = eval_data(c, flow, meta, &p);
  if (!rc) rc = log_densities(flow, &p, &logp);
  if (!rc && c->out && write_rows(c->out, p.x->n, 0, logp)) rc = die("--out: %s", nf_errmsg());
  if (!rc) {
    printf("model=%s\ndata=%s\n", c->model, c->data);
    nll_summary s = summarize(p.x->n, logp);
    rc = print_summary("", &s);
  }
  free(logp);
  part_free(&p);
  nf_meta_free(meta);
  nf_flow_free(flow);
  return rc;
}

/* Parses "--context-row 0.5,1.2" into c values. */
static int parse_row(const char *s, size_t c, double *v)
{
  const char *p = s;
  size_t k = 0;
  while (*p) {
    char *end;
    double x = strtod(p, &end);
    if (end == p || !isfinite(x) || k == c || (*end && *end != ','))
      return die("--context-row: expected %zu comma-separated numbers, got '%s'", c, s);
    v[k++] = x;
    p = *end ? end + 1 : end;
  }
  return k == c ? 0 : die("--context-row: expected %zu numbers, got '%s'", c, s);
}

static int cmd_sample(cfg *c)
{
  nf_flow *flow = NULL;
  nf_meta *meta = NULL;
  int rc = load_model(c, &flow, &meta);
  if (rc) return rc;
  size_t n = c->n_samples ? c->n_samples : 1000, d = nf_flow_dim(flow), cd = nf_flow_ctx_dim(flow);
  double *ctx = NULL, *x = NULL;
  nf_dataset *cf = NULL;
  if (cd && !c->context && !c->context_row)
    rc = die("the model is conditional (%zu context columns): give --context FILE or "
             "--context-row", cd);
  else if (!cd && (c->context || c->context_row))
    rc = die("%s: the model is unconditional", c->context ? "--context" : "--context-row");
  else if (c->context && c->context_row)
    rc = die("--context and --context-row exclude each other");
  else if (c->context) {
    if (read_file(c->context, &cf)) rc = die("--context %s: %s", c->context, nf_errmsg());
    else if (cf->dim != cd)
      rc = die("--context %s: %zu columns, the model takes %zu", c->context, cf->dim, cd);
    else if (given[0] || c->n_samples) { /* -n with a context file: must agree */
      if (c->n_samples && c->n_samples != cf->n)
        rc = die("-n %zu: the context file has %zu rows (one per sample)", c->n_samples, cf->n);
    }
    if (!rc) n = cf->n;
  }
  size_t nd = 0, ncd = 0;
  if (!rc && (mul_overflows(n, d * sizeof *x, &nd) || mul_overflows(n, cd * sizeof *ctx, &ncd)))
    rc = die("-n %zu: %zu samples of dimension %zu (context %zu) overflow a size_t of bytes", n,
             n, d, cd);
  if (!rc && (x = malloc(nd)) == NULL) rc = die("out of memory");
  if (!rc && c->context_row) {
    ctx = malloc(ncd);
    if (!ctx || parse_row(c->context_row, cd, ctx)) rc = ctx ? 2 : die("out of memory");
    for (size_t i = 1; !rc && i < n; i++) memcpy(ctx + i * cd, ctx, cd * sizeof *ctx);
  }
  if (!rc) {
    nf_rng rng;
    nf_rng_seed(&rng, c->seed_plus_one - 1);
    if (nf_flow_sample(flow, &rng, n, cf ? cf->x : ctx, x, NULL)) rc = die("sample: %s", nf_errmsg());
  }
  if (!rc && (c->target || c->target_lib)) { /* the report instead of the rows */
    tool_target t;
    nf_rng rng;
    nf_rng_seed(&rng, c->seed_plus_one - 1);
    if (cd) rc = die("--target: the model is conditional; targets are unconditional");
    else if (!(rc = open_target(c, &t))) {
      if (nf_target_dim(t.target) != d)
        rc = die("--target %s is %zu-D, the model %zu-D", t.label, nf_target_dim(t.target), d);
      else rc = tool_target_report(flow, &t, &rng, n);
      tool_target_close(&t);
    }
    if (!rc) printf("model=%s\n", c->model);
    free(x);
    nf_meta_free(meta);
    nf_flow_free(flow);
    return rc;
  }
  if (!rc && c->out && write_rows(c->out, n, d, x)) rc = die("--out: %s", nf_errmsg());
  if (!rc && !c->out)
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < d; j++) printf("%.17g%c", x[i * d + j], j + 1 < d ? ',' : '\n');
  if (!rc && c->out) printf("samples=%zu\ndim=%zu\nout=%s\n", n, d, c->out);
  free(x);
  free(ctx);
  nf_dataset_free(cf);
  nf_meta_free(meta);
  nf_flow_free(flow);
  return rc;
}

static int cmd_info(cfg *c)
{
  nf_flow *flow = NULL;
  nf_meta *meta = NULL;
  int rc = load_model(c, &flow, &meta);
  if (rc) return rc;
  printf("model=%s\ndim=%zu\ncontext_dim=%zu\nbase=%s\nlayers=%zu\nparams=%zu\n", c->model,
         nf_flow_dim(flow), nf_flow_ctx_dim(flow), nf_base_name(nf_flow_base(flow)),
         nf_flow_n_layers(flow), nf_flow_n_params(flow));
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++) {
    const nf_layer *l = nf_flow_layer(flow, k);
    printf("layer.%zu=%s params=%zu\n", k, nf_layer_name(l), nf_layer_n_params(l));
  }
  for (size_t i = 0; i < nf_meta_count(meta); i++)
    printf("meta.%s=%s\n", nf_meta_key(meta, i), nf_meta_value(meta, i));
  nf_meta_free(meta);
  nf_flow_free(flow);
  return 0;
}

/* ---- pictures (--png on train and compare, the plot verb; cairo) ---- */

#define PANEL_PX 400          /* pixels of one panel */
#define PICTURE_POINTS 20000  /* points of the data and sample histograms */
#define CORNER_MAX_DIM 6      /* the largest dimension of a corner plot */


#ifdef HAVE_CAIRO
/* The figure a run is drawing: --png's path, the next compare column, and
   the temporary curve file of a train --png without --curve. */
typedef struct pictures {
  const char *path;
  int compare;
  nf_plot_figure *fig;
  size_t next_col, cols;
  char curve_tmp[64];
} pictures;
static pictures pics;

/* The box shown for 2-D rows x (n x 2): [-4, 4]^2 for toy sets (FFJORD's
   figures), else each column's 0.5% to 99.5% range widened by 10%. */
static void picture_box(const char *data, size_t n, const double *x, nf_plot_box *box)
{
  if (data && is_toy(data)) {
    *box = (nf_plot_box){-4, 4, -4, 4};
    return;
  }
  double *v = malloc(n * sizeof *v), r[2][2];
  for (int k = 0; k < 2; k++) {
    for (size_t i = 0; v && i < n; i++) v[i] = x[2 * i + k];
    if (v) qsort(v, n, sizeof *v, cmp_double);
    double a = v ? v[(size_t)(0.005 * (double)(n - 1))] : -4, b = v ? v[(size_t)(0.995 * (double)(n - 1))] : 4;
    double pad = b > a ? 0.1 * (b - a) : 1;
    r[k][0] = a - pad, r[k][1] = b + pad;
  }
  free(v);
  *box = (nf_plot_box){r[0][0], r[0][1], r[1][0], r[1][1]};
}

/* n draws of the flow (seed), into a new array; NULL with a message. */
static double *picture_samples(nf_flow *flow, uint64_t seed, size_t n)
{
  double *x = malloc(n * nf_flow_dim(flow) * sizeof *x);
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  if (!x || nf_flow_sample(flow, &rng, n, NULL, x, NULL)) {
    die("--png: sampling: %s", x ? nf_errmsg() : "out of memory");
    free(x);
    return NULL;
  }
  return x;
}

/* The panels of one 2-D flow from column col on: [the data histogram,] the
   density, the samples' histogram (and a target's density first). */
static int picture_2d(nf_plot_figure *fig, size_t col, const char *data, size_t n, const double *x,
                      const nf_target *target, nf_flow *flow, uint64_t seed, const char *title)
{
  nf_plot_box box;
  double *s = picture_samples(flow, seed, PICTURE_POINTS);
  if (!s) return 1;
  picture_box(data, x ? n : PICTURE_POINTS, x ? x : s, &box);
  size_t m = x && n > PICTURE_POINTS ? PICTURE_POINTS : n;
  nf_status st = NF_OK;
  if (target) st = nf_plot_target(fig, col++, 0, "target exp(log p~)", target, &box);
  if (!st && x) st = nf_plot_hist2d(fig, col++, 0, "data", m, 2, x, 0, 1, &box, 0, 0);
  if (!st) st = nf_plot_density(fig, col++, 0, title, flow, &box);
  if (!st) st = nf_plot_hist2d(fig, col, 0, "samples", PICTURE_POINTS, 2, s, 0, 1, &box, 0, 0);
  free(s);
  return st ? die("--png: %s", nf_errmsg()) : 0;
}

/* A corner plot of the flow's samples against the data rows x (n x dim). */
static int picture_corner(nf_plot_figure *fig, nf_flow *flow, uint64_t seed, size_t n,
                          const double *x)
{
  size_t d = nf_flow_dim(flow), m = n > PICTURE_POINTS ? PICTURE_POINTS : n;
  double *s = picture_samples(flow, seed, PICTURE_POINTS);
  if (!s) return 1;
  nf_status st = nf_plot_corner(fig, 0, 0, d, PICTURE_POINTS, s, x ? m : PICTURE_POINTS, x ? x : s, NULL);
  free(s);
  return st ? die("--png: %s", nf_errmsg()) : 0;
}

/* Refuses pictures of a flow they cannot show. */
static int picture_check(const nf_flow *flow, int corner_ok)
{
  size_t d = nf_flow_dim(flow);
  if (nf_flow_ctx_dim(flow)) return die("--png: the flow is conditional; pictures show unconditional flows");
  if (d != 2 && !corner_ok) return die("--png: compare draws densities of 2-D data; the data are %zu-D "
                                       "(train --png draws a corner plot)", d);
  if (d > CORNER_MAX_DIM) return die("--png: a corner plot takes at most %d dimensions, the flow has %zu",
                                     CORNER_MAX_DIM, d);
  return 0;
}

/* The figure of a run: columns for 2-D, a corner (and a row for curves) above. */
static int picture_figure(size_t cols, size_t rows)
{
  if (pics.fig) return 0;
  pics.cols = cols;
  pics.fig = nf_plot_figure_new(cols, rows, PANEL_PX);
  return pics.fig ? 0 : die("--png: %s", nf_errmsg());
}

/* The training curve panels of run c (loss; ESS for a target, NFE for a
   CNF) from column col of row row. */
static int picture_curves(const cfg *c, size_t col, size_t row, int with_ess)
{
  nf_status st = nf_plot_curve_csv(pics.fig, col, row, "training curve", c->curve, "loss");
  if (!st && with_ess) st = nf_plot_curve_csv(pics.fig, col + 1, row, "effective sample size", c->curve, "ess");
  else if (!st && !strcmp(c->flow, "cnf") && col + 1 < pics.cols)
    st = nf_plot_curve_csv(pics.fig, col + 1, row, "function evaluations", c->curve, "nfe");
  return st ? die("--png: %s", nf_errmsg()) : 0;
}

/* Called by run_flow with each trained flow: compare draws the data (first
   flow) and the flow's density titled with its test NLL; train draws data,
   density, samples and the curve (a corner plot for d > 2). */
static int picture_flow(const cfg *c, nf_flow *flow, const split *s, const result *r)
{
  if (!pics.path) return 0;
  const nf_dataset *x = s->train.x;
  int rc = picture_check(flow, !pics.compare);
  size_t d = nf_flow_dim(flow);
  char title[96];
  snprintf(title, sizeof title, "%s  (test NLL %.3f)", c->flow, r->test.mean);
  if (!rc && pics.compare) {
    nf_status st = NF_OK;
    nf_plot_box box;
    picture_box(c->data, x->n, x->x, &box);
    if (pics.next_col == 0)
      st = nf_plot_hist2d(pics.fig, pics.next_col++, 0, "data", x->n < PICTURE_POINTS ? x->n : PICTURE_POINTS,
                          2, x->x, 0, 1, &box, 0, 0);
    if (!st) st = nf_plot_density(pics.fig, pics.next_col++, 0, title, flow, &box);
    return st ? die("--png: %s", nf_errmsg()) : 0;
  }
  if (!rc) rc = picture_figure(d == 2 ? 4 + !strcmp(c->flow, "cnf") : d, d == 2 ? 1 : d + 1);
  if (!rc && d == 2) rc = picture_2d(pics.fig, 0, c->data, x->n, x->x, NULL, flow, c->seed_plus_one, title);
  else if (!rc) rc = picture_corner(pics.fig, flow, c->seed_plus_one, x->n, x->x);
  if (!rc) rc = picture_curves(c, d == 2 ? 3 : 0, d == 2 ? 0 : d, 0);
  return rc;
}

/* train --target --png: the target's density beside the flow's, its samples
   and the loss and ESS curves (2-D targets). */
static int picture_target(const cfg *c, nf_flow *flow, const nf_target *target)
{
  if (!pics.path) return 0;
  if (nf_flow_dim(flow) != 2)
    return die("--png: --target pictures show 2-D targets; %s is %zu-D", nf_target_name(target),
               nf_flow_dim(flow));
  int rc = picture_figure(5, 1);
  if (!rc) rc = picture_2d(pics.fig, 0, NULL, 0, NULL, target, flow, c->seed_plus_one, c->flow);
  if (!rc) rc = picture_curves(c, 3, 0, 1);
  return rc;
}

/* Starts the pictures of a train or compare run with --png (compare: one
   column for the data and one per flow); a train run without --curve
   records its curve in a temporary file. */
static int pictures_begin(cfg *c, size_t compare_flows)
{
  if (!c->png) return 0;
  pics = (pictures){.path = c->png, .compare = compare_flows > 0};
  if (compare_flows) return picture_figure(compare_flows + 1, 1);
  if (!c->curve) {
    const char *dir = getenv("TMPDIR");
    snprintf(pics.curve_tmp, sizeof pics.curve_tmp, "%s/nflow-curve.XXXXXX",
             dir && strlen(dir) < 40 ? dir : "/tmp");
    int fd = mkstemp(pics.curve_tmp);
    if (fd < 0) return die("--png: a temporary curve file: %s", strerror(errno));
    close(fd);
    c->curve = pics.curve_tmp;
  }
  return 0;
}

/* Writes the figure (if the run succeeded) and frees it. */
static int pictures_end(int rc)
{
  if (pics.fig && !rc && nf_plot_write_png(pics.fig, pics.path)) rc = die("--png: %s", nf_errmsg());
  else if (pics.fig && !rc) printf("png=%s\n", pics.path);
  if (*pics.curve_tmp) unlink(pics.curve_tmp);
  nf_plot_figure_free(pics.fig);
  pics = (pictures){0};
  return rc;
}

/* nflow plot --model M [--data X] [--target T] --out F.png: the saved
   model's pictures (2-D: [target,] [data,] density, samples; else a corner
   plot of samples against the data or themselves). */
static int cmd_plot(cfg *c)
{
  if (!c->out) return die("--out FILE.png is required");
  nf_flow *flow = NULL;
  nf_meta *meta = NULL;
  int rc = load_model(c, &flow, &meta);
  if (rc) return rc;
  part p = {0};
  tool_target t = {0};
  size_t d = nf_flow_dim(flow);
  rc = picture_check(flow, 1);
  if (!rc && c->data) rc = eval_data(c, flow, meta, &p);
  if (!rc && (c->target || c->target_lib)) {
    rc = open_target(c, &t);
    if (!rc && nf_target_dim(t.target) != 2)
      rc = die("--target: pictures show 2-D targets; %s is %zu-D", t.label, nf_target_dim(t.target));
  }
  pics = (pictures){.path = c->out};
  if (!rc) rc = picture_figure(d == 2 ? 2 + (size_t)(p.x != NULL) + (size_t)(t.target != NULL) : d,
                                     d == 2 ? 1 : d);
  if (!rc && d == 2)
    rc = picture_2d(pics.fig, 0, c->data, p.x ? p.x->n : 0, p.x ? p.x->x : NULL, t.target, flow,
                    c->seed_plus_one, "model density");
  else if (!rc)
    rc = picture_corner(pics.fig, flow, c->seed_plus_one, p.x ? p.x->n : 0, p.x ? p.x->x : NULL);
  rc = pictures_end(rc);
  if (t.target) tool_target_close(&t);
  part_free(&p);
  nf_meta_free(meta);
  nf_flow_free(flow);
  return rc;
}
#else
/* Built without cairo: every picture option is refused before any work. */
static int pictures_begin(cfg *c, size_t compare_flows)
{
  (void)compare_flows;
  return c->png ? die("--png: nflow was built without cairo (configure --with-cairo)") : 0;
}
static int picture_flow(const cfg *c, nf_flow *flow, const split *s, const result *r)
{
  (void)c, (void)flow, (void)s, (void)r;
  return 0;
}
static int picture_target(const cfg *c, nf_flow *flow, const nf_target *target)
{
  (void)c, (void)flow, (void)target;
  return 0;
}
static int pictures_end(int rc) { return rc; }
static int cmd_plot(cfg *c)
{
  (void)c;
  return die("plot: nflow was built without cairo (configure --with-cairo)");
}
#endif

/* The group size mpirun gives this process through its environment (Open
   MPI's, then MPICH's and PMIx's); 1 when not launched by mpirun. */
static size_t mpirun_size(void)
{
  const char *names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
  for (size_t k = 0; k < 3; k++) {
    const char *v = getenv(names[k]);
    if (v && *v) return (size_t)strtoull(v, NULL, 10);
  }
  return 1;
}

static int launched_by_mpirun(void)
{
  return mpirun_size() > 1;
}

#ifdef HAVE_MPI
/* train under mpirun: MPI up, rank 0 prints, the others are silent; every
   rank exits with the highest status of any rank. */
static int train_parallel(int *argc, char ***argv, cfg *c)
{
  if (c->target || c->target_lib)
    return die("under mpirun, train runs on data only (--target trains as one process)");
  if (MPI_Init(argc, argv) != MPI_SUCCESS) return die("MPI_Init failed");
  int rc = 0, all = 0;
  if (!(g_comm = nf_comm_mpi_new(MPI_COMM_WORLD))) rc = die("MPI: %s", nf_errmsg());
  if (g_comm && g_comm->rank > 0 &&
      (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)))
    rc = 1;
  rc = agree(rc, "MPI");
  if (!rc) rc = cmd_train(c);
  if (MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) all = rc ? rc : 1;
  nf_comm_mpi_free(g_comm);
  g_comm = NULL;
  MPI_Finalize();
  return all;
}
#else
static int train_parallel(int *argc, char ***argv, cfg *c)
{
  (void)argc, (void)argv, (void)c;
  return die("nflow was built without MPI (configure --with-mpi, with libopenmpi-dev): "
             "under mpirun each of the %zu processes would train alone; run one process",
             mpirun_size());
}
#endif

int main(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("nflow %s\n", NFLOW_VERSION_STRING);
    return 0;
  }
  static const char *const cmds[] = {"train", "compare", "eval", "sample", "info", "plot"};
  size_t cmd = 0;
  while (cmd < 6 && strcmp(argv[1], cmds[cmd])) cmd++;
  if (cmd == 6)
    return die("unknown command '%s' (expected train, compare, eval, sample, info or plot)", argv[1]);
  cfg c = {.iters = 2000, .threads = 1, .seed_plus_one = 2, .lr = NAN, .test_frac = NAN,
           .weight_decay = NAN, .clip = NAN, .scale_bound = NAN, .tail_bound = NAN, .end_time = NAN,
           .rtol = NAN, .atol = NAN, .kinetic = NAN, .jacobian = NAN, .val_frac = NAN,
           .logit_alpha = NAN, .mass2 = NAN, .lambda = NAN, .anneal_beta0 = NAN};
  int rc = parse_args(argc - 2, argv + 2, &c, cmd <= 2);
  if (rc) return rc;
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
  openblas_set_num_threads(1); /* --threads are nflow's workers; BLAS runs inside them */
#endif
  if (launched_by_mpirun()) return cmd == 0 ? train_parallel(&argc, &argv, &c) :
                                 die("under mpirun only 'train' runs (data-parallel); run "
                                     "'%s' as one process", cmds[cmd]);
  switch (cmd) {
  case 0: return cmd_train(&c);
  case 1: return cmd_compare(&c);
  case 2: return cmd_eval(&c);
  case 3: return cmd_sample(&c);
  case 5: return cmd_plot(&c);
  default: return cmd_info(&c);
  }
}
