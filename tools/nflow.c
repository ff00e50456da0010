/* tools/nflow.c — the `nflow` command: train a flow on a toy set or a CSV file
   and report its held-out negative log-likelihood as key=value lines. */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "nflow.h"

#define MAX_HIDDEN 16
#define TOY_TEST_POINTS 5000
#define TOY_MAX_TRAIN_POINTS 1000000

typedef struct train_cfg {
  const char *flow, *data, *act, *schedule;
  size_t layers, iters, batch, threads, n_hidden, hidden[MAX_HIDDEN];
  double lr, test_frac, weight_decay, clip, scale_bound;
  unsigned long long seed;
} train_cfg;

static const char *usage_text =
  "usage: nflow train --data NAME|FILE.csv [options]\n"
  "  --flow realnvp|nice|glow|planar|radial   flow recipe (default realnvp)\n"
  "  --data NAME|FILE.csv   toy set (8gaussians, moons, circles, rings, pinwheel,\n"
  "                         2spirals, checkerboard, swissroll) or a CSV file\n"
  "  --layers K             couplings / blocks / layers (default 8)\n"
  "  --hidden 64,64         conditioner hidden widths (default 64,64)\n"
  "  --act relu|tanh|elu|softplus   conditioner activation (default relu)\n"
  "  --scale-bound B        soft clamp of affine couplings' log-scale (default 3)\n"
  "  --iters N              training iterations (default 2000)\n"
  "  --batch B              batch size (default 256)\n"
  "  --lr X                 Adam learning rate (default 5e-3)\n"
  "  --schedule cosine|constant   learning-rate schedule (default cosine)\n"
  "  --weight-decay X       decoupled weight decay (default 0)\n"
  "  --clip X               gradient-norm clipping, 0 = off (default 5)\n"
  "  --test-frac F          held-out fraction of a CSV file (default 0.2)\n"
  "  --seed S               random seed (default 1)\n"
  "  --threads T            BLAS threads (default 1)\n"
  "Toy sets train on fresh points and test on 5000 points from another seed.\n"
  "Output ends with key=value lines: test_nll, train_seconds, ms_per_iter, params, ...\n";

/* Prints "nflow: <message>" and returns the exit status for bad usage. */
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

/* Parses a positive integer option value. */
static int parse_count(const char *opt, const char *s, size_t *out)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v == 0 || s[0] == '-')
    return die("%s: expected a positive integer, got '%s'", opt, s);
  *out = (size_t)v;
  return 0;
}

/* Parses a finite non-negative real option value. */
static int parse_real(const char *opt, const char *s, double *out)
{
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || !isfinite(v) || v < 0)
    return die("%s: expected a non-negative number, got '%s'", opt, s);
  *out = v;
  return 0;
}

/* Parses a comma-separated list of positive widths such as "64,64". */
static int parse_widths(const char *opt, const char *s, size_t *n, size_t *w)
{
  const char *p = s;
  *n = 0;
  while (*p) {
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p || v == 0 || *n == MAX_HIDDEN || (*end && *end != ',') || *p == '-')
      return die("%s: expected widths like 64,64, got '%s'", opt, s);
    w[(*n)++] = (size_t)v;
    p = *end ? end + 1 : end;
    if (*end == ',' && !*p) return die("%s: expected widths like 64,64, got '%s'", opt, s);
  }
  return *n ? 0 : die("%s: expected widths like 64,64, got '%s'", opt, s);
}

/* Fills cfg from argv (after the subcommand); nonzero exit status on error. */
static int parse_train_args(int argc, char **argv, train_cfg *cfg)
{
  for (int i = 0; i < argc; i++) {
    const char *opt = argv[i];
    if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
      fputs(usage_text, stdout);
      exit(0);
    }
    if (i + 1 >= argc) return die("%s: missing value (see nflow --help)", opt);
    const char *val = argv[++i];
    int rc = 0;
    size_t seed;
    if (!strcmp(opt, "--flow")) cfg->flow = val;
    else if (!strcmp(opt, "--data")) cfg->data = val;
    else if (!strcmp(opt, "--act")) cfg->act = val;
    else if (!strcmp(opt, "--schedule")) cfg->schedule = val;
    else if (!strcmp(opt, "--layers")) rc = parse_count(opt, val, &cfg->layers);
    else if (!strcmp(opt, "--iters")) rc = parse_count(opt, val, &cfg->iters);
    else if (!strcmp(opt, "--batch")) rc = parse_count(opt, val, &cfg->batch);
    else if (!strcmp(opt, "--threads")) rc = parse_count(opt, val, &cfg->threads);
    else if (!strcmp(opt, "--hidden")) rc = parse_widths(opt, val, &cfg->n_hidden, cfg->hidden);
    else if (!strcmp(opt, "--lr")) rc = parse_real(opt, val, &cfg->lr);
    else if (!strcmp(opt, "--weight-decay")) rc = parse_real(opt, val, &cfg->weight_decay);
    else if (!strcmp(opt, "--clip")) rc = parse_real(opt, val, &cfg->clip);
    else if (!strcmp(opt, "--scale-bound")) rc = parse_real(opt, val, &cfg->scale_bound);
    else if (!strcmp(opt, "--test-frac")) rc = parse_real(opt, val, &cfg->test_frac);
    else if (!strcmp(opt, "--seed")) {
      rc = strcmp(val, "0") ? parse_count(opt, val, &seed) : (seed = 0, 0);
      cfg->seed = seed;
    } else
      return die("unknown option '%s' (see nflow --help)", opt);
    if (rc) return rc;
  }
  if (!cfg->data) return die("train: --data is required (a toy set name or a CSV file)");
  if (strcmp(cfg->schedule, "cosine") && strcmp(cfg->schedule, "constant"))
    return die("--schedule: expected cosine or constant, got '%s'", cfg->schedule);
  if (cfg->test_frac <= 0 || cfg->test_frac >= 1)
    return die("--test-frac: expected a number strictly between 0 and 1");
  return 0;
}

/* True if name is one of the toy sets. */
static int is_toy(const char *name)
{
  for (const char *const *t = nf_toy_names(); *t; t++)
    if (!strcmp(*t, name)) return 1;
  return 0;
}

/* Training and test sets: fresh toy points from two seeds, or a CSV split. */
static nf_status load_data(const train_cfg *cfg, nf_rng *rng, nf_dataset **train, nf_dataset **test)
{
  if (is_toy(cfg->data)) {
    size_t n = cfg->iters * cfg->batch;
    nf_rng test_rng = *rng;
    nf_rng_jump(&test_rng);
    nf_status st = nf_toy_sample(cfg->data, n < TOY_MAX_TRAIN_POINTS ? n : TOY_MAX_TRAIN_POINTS, rng, train);
    if (!st && (st = nf_toy_sample(cfg->data, TOY_TEST_POINTS, &test_rng, test))) nf_dataset_free(*train);
    return st;
  }
  nf_dataset *all;
  nf_status st = nf_dataset_read_csv(cfg->data, &all);
  if (st) return st;
  st = nf_dataset_split(all, 1.0 - cfg->test_frac, rng, train, test);
  nf_dataset_free(all);
  return st;
}

/* Progress bar on stderr: iterations, batch loss, elapsed time. */
static int draw_progress(const nf_train_progress *p, void *user)
{
  (void)user;
  size_t every = p->total / 100 ? p->total / 100 : 1;
  if (p->iteration % every && p->iteration != p->total) return 0;
  int width = 30, filled = (int)(width * p->iteration / p->total);
  fprintf(stderr, "\r[%.*s%*s] %zu/%zu  loss %.4f  %.1fs", filled,
          "##############################", width - filled, "", p->iteration, p->total,
          p->loss, p->seconds);
  if (p->iteration == p->total) fputc('\n', stderr);
  return 0;
}

/* Builds, trains and evaluates the configured flow; prints key=value lines. */
static int run_train(const train_cfg *cfg)
{
  nf_recipe_kind kind;
  nf_activation act;
  if (nf_recipe_parse(cfg->flow, &kind)) return die("--flow: %s", nf_errmsg());
  if (nf_activation_parse(cfg->act, &act)) return die("--act: %s", nf_errmsg());
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
  openblas_set_num_threads((int)cfg->threads);
#endif
  nf_rng rng;
  nf_rng_seed(&rng, cfg->seed);
  nf_dataset *train = NULL, *test = NULL;
  if (load_data(cfg, &rng, &train, &test)) return die("--data %s: %s", cfg->data, nf_errmsg());
  nf_recipe recipe = nf_recipe_defaults(kind);
  recipe.layers = cfg->layers;
  recipe.n_hidden = cfg->n_hidden;
  recipe.hidden = cfg->hidden;
  recipe.act = act;
  recipe.scale_bound = cfg->scale_bound;
  nf_flow *flow = nf_recipe_build(train->dim, 0, &recipe, &rng);
  nf_adam_opts aopts = nf_adam_defaults();
  aopts.lr = cfg->lr;
  aopts.weight_decay = cfg->weight_decay;
  aopts.decoupled = 1;
  aopts.clip_norm = cfg->clip;
  nf_adam *adam = flow ? nf_adam_new(nf_flow_n_params(flow), &aopts) : NULL;
  nf_trainer_opts topts = nf_trainer_defaults();
  topts.batch_size = cfg->batch;
  topts.iterations = cfg->iters;
  topts.callback = isatty(STDERR_FILENO) ? draw_progress : NULL;
  topts.schedule = strcmp(cfg->schedule, "cosine") ? NF_LR_CONSTANT : NF_LR_COSINE;
  nf_trainer *trainer = adam ? nf_trainer_new(flow, adam, train, NULL, &topts, &rng) : NULL;
  nf_train_report report;
  double test_nll = NAN, train_nll = NAN;
  int rc = 0;
  nf_status st = NF_EINVAL;
  if (!trainer || (st = nf_trainer_run(trainer, &report)) || (st = nf_flow_nll(flow, test->n, test->x, NULL, &test_nll)) ||
      (st = nf_flow_nll(flow, train->n < 5000 ? train->n : 5000, train->x, NULL, &train_nll)))
    rc = die("train: %s", nf_errmsg());
  if (!rc) {
    printf("flow=%s\ndata=%s\ndim=%zu\nparams=%zu\niters=%zu\nbatch=%zu\n", cfg->flow, cfg->data,
           train->dim, nf_flow_n_params(flow), report.iterations, cfg->batch);
    printf("train_nll=%.6f\ntest_nll=%.6f\ntrain_seconds=%.3f\nms_per_iter=%.4f\n",
           train_nll, test_nll, report.seconds,
           1e3 * report.seconds / (double)report.iterations);
  }
  nf_trainer_free(trainer);
  nf_adam_free(adam);
  nf_flow_free(flow);
  nf_dataset_free(train);
  nf_dataset_free(test);
  return rc;
}

int main(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    fputs(usage_text, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "train")) return die("unknown command '%s' (expected: train)", argv[1]);
  train_cfg cfg = {.flow = "realnvp", .act = "relu", .schedule = "cosine", .layers = 8,
                   .iters = 2000, .batch = 256, .threads = 1, .n_hidden = 2,
                   .hidden = {64, 64}, .lr = 5e-3, .test_frac = 0.2, .clip = 5.0,
                   .scale_bound = 3.0, .seed = 1};
  int rc = parse_train_args(argc - 2, argv + 2, &cfg);
  return rc ? rc : run_train(&cfg);
}
