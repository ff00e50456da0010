/* tools/nflow.c — the `nflow` command: train discrete or continuous flows on a
   toy set or a CSV file, report held-out negative log-likelihoods, and compare
   flows on one split. Results end as key=value lines for scripts. */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "nflow.h"

#define MAX_HIDDEN 16
#define MAX_FLOWS 8
#define TOY_TEST_POINTS 5000
#define TOY_MAX_TRAIN_POINTS 1000000
#define TRAIN_NLL_ROWS 5000

/* Options of one run; 0, NAN or NULL mean "the flow's default". */
typedef struct cfg {
  const char *flow, *data, *act, *schedule, *flows;
  const char *solver, *grad_mode, *trace, *dynamics;
  size_t layers, iters, batch, threads, n_hidden, hidden[MAX_HIDDEN], max_steps;
  double lr, test_frac, weight_decay, clip, scale_bound;
  double end_time, rtol, atol, kinetic, jacobian;
  size_t seed_plus_one, fixed_T;
} cfg;

typedef enum { OPT_STR, OPT_COUNT, OPT_REAL, OPT_WIDTHS, OPT_SEED, OPT_FLAG } opt_kind;
typedef struct opt_spec {
  const char *name;
  opt_kind kind;
  size_t offset;
  const char *help;
} opt_spec;

#define OPT(name, kind, field, help) {name, kind, offsetof(cfg, field), help}
static const opt_spec opt_specs[] = {
  OPT("--flow", OPT_STR, flow, "realnvp|nice|glow|planar|radial|cnf (default realnvp)"),
  OPT("--flows", OPT_STR, flows, "compare: comma-separated flows (default realnvp,cnf)"),
  OPT("--data", OPT_STR, data, "toy set (8gaussians, moons, circles, rings, pinwheel, 2spirals,\n"
                               "                       checkerboard, swissroll), a CSV file of numbers or a\n"
                               "                       NumPy .npy file (float64/float32, shape (n, d) or (n,))"),
  OPT("--iters", OPT_COUNT, iters, "training iterations (default 2000)"),
  OPT("--batch", OPT_COUNT, batch, "batch size (default 256; cnf 100)"),
  OPT("--lr", OPT_REAL, lr, "Adam learning rate (default 5e-3; cnf 1e-3)"),
  OPT("--schedule", OPT_STR, schedule, "cosine|constant learning rate (default cosine; cnf constant)"),
  OPT("--weight-decay", OPT_REAL, weight_decay, "L2 weight decay as torch.optim.Adam (default 0; cnf 1e-5)"),
  OPT("--clip", OPT_REAL, clip, "gradient-norm clipping, 0 = off (default 5; cnf 0)"),
  OPT("--layers", OPT_COUNT, layers, "couplings / blocks / layers (default 8; cnf 1)"),
  OPT("--hidden", OPT_WIDTHS, n_hidden, "hidden widths (default 64,64; cnf 64,64,64)"),
  OPT("--act", OPT_STR, act, "relu|tanh|elu|softplus (default relu); cnf: tanh|softplus|swish (tanh)"),
  OPT("--scale-bound", OPT_REAL, scale_bound, "soft clamp of affine couplings' log-scale (default 3)"),
  OPT("--dynamics", OPT_STR, dynamics, "cnf: concatsquash|concat|sinusoidal (default concatsquash)"),
  OPT("--end-time", OPT_REAL, end_time, "cnf: integration time T (default 0.5)"),
  OPT("--fixed-end-time", OPT_FLAG, fixed_T, "cnf: do not learn T"),
  OPT("--solver", OPT_STR, solver, "cnf: dopri5|rk4|euler|adams|bdf (default dopri5)"),
  OPT("--rtol", OPT_REAL, rtol, "cnf: relative tolerance (default 1e-5)"),
  OPT("--atol", OPT_REAL, atol, "cnf: absolute tolerance (default 1e-5)"),
  OPT("--steps", OPT_COUNT, max_steps, "cnf: fixed steps of rk4/euler (default 100)"),
  OPT("--grad-mode", OPT_STR, grad_mode, "cnf: backsolve|checkpoint|discrete (default backsolve)"),
  OPT("--trace", OPT_STR, trace, "cnf: exact|rademacher|gaussian (default exact)"),
  OPT("--kinetic", OPT_REAL, kinetic, "cnf: RNODE kinetic-energy weight (default 0)"),
  OPT("--jacobian", OPT_REAL, jacobian, "cnf: RNODE Jacobian-norm weight (default 0)"),
  OPT("--test-frac", OPT_REAL, test_frac, "held-out fraction of a CSV file (default 0.2)"),
  OPT("--seed", OPT_SEED, seed_plus_one, "random seed (default 1)"),
  OPT("--threads", OPT_COUNT, threads, "BLAS threads (default 1)"),
};
#define N_OPTS (sizeof opt_specs / sizeof *opt_specs)

/* What one trained flow reports. */
typedef struct result {
  const char *flow;
  size_t params, iters;
  double train_nll, test_nll, seconds, ms_per_iter, nfe_forward, nfe_backward, end_time;
  int continuous;
} result;

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

static void usage(FILE *out)
{
  fputs("usage: nflow train --data NAME|FILE.csv|FILE.npy [options]\n"
        "       nflow compare --data NAME|FILE.csv|FILE.npy [--flows realnvp,cnf] [options]\n", out);
  for (size_t k = 0; k < N_OPTS; k++)
    fprintf(out, "  %-18s %s\n", opt_specs[k].name, opt_specs[k].help);
  fputs("Toy sets train on fresh points and test on 5000 points from another seed;\n"
        "CSV files are split. Output ends with key=value lines (test_nll, params,\n"
        "train_seconds, ms_per_iter, and for cnf nfe_forward and nfe_backward).\n", out);
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
  for (*n = 0; *p; (*n)++) {
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p || v == 0 || *n == MAX_HIDDEN || (*end && *end != ',') || *p == '-' ||
        (*end == ',' && !end[1]))
      return die("%s: expected widths like 64,64, got '%s'", opt, s);
    w[*n] = (size_t)v;
    p = *end ? end + 1 : end;
  }
  return *n ? 0 : die("%s: expected widths like 64,64, got '%s'", opt, s);
}

/* Stores one option value into c by its spec. */
static int set_option(const opt_spec *o, const char *val, cfg *c)
{
  char *field = (char *)c + o->offset;
  switch (o->kind) {
  case OPT_STR: *(const char **)field = val; return 0;
  case OPT_COUNT: return parse_count(o->name, val, (size_t *)field);
  case OPT_REAL: return parse_real(o->name, val, (double *)field);
  case OPT_WIDTHS: return parse_widths(o->name, val, &c->n_hidden, c->hidden);
  case OPT_SEED: {
    double s;
    if (parse_real(o->name, val, &s) || s != floor(s))
      return die("%s: expected a non-negative integer, got '%s'", o->name, val);
    c->seed_plus_one = (size_t)s + 1;
    return 0;
  }
  case OPT_FLAG: break;
  }
  return 0;
}

/* Fills c from argv (after the subcommand); nonzero exit status on error. */
static int parse_args(int argc, char **argv, cfg *c)
{
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage(stdout);
      exit(0);
    }
    const opt_spec *o = NULL;
    for (size_t k = 0; k < N_OPTS && !o; k++)
      if (!strcmp(argv[i], opt_specs[k].name)) o = &opt_specs[k];
    if (!o) return die("unknown option '%s' (see nflow --help)", argv[i]);
    if (o->kind == OPT_FLAG) {
      *(size_t *)((char *)c + o->offset) = 1;
      continue;
    }
    if (i + 1 >= argc) return die("%s: missing value (see nflow --help)", argv[i]);
    int rc = set_option(o, argv[++i], c);
    if (rc) return rc;
  }
  if (!c->data) return die("--data is required (a toy set name or a CSV file)");
  if (!isnan(c->test_frac) && (c->test_frac <= 0 || c->test_frac >= 1))
    return die("--test-frac: expected a number strictly between 0 and 1");
  return 0;
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
  if (!c->layers) c->layers = cnf ? 1 : 8;
  if (!c->batch) c->batch = cnf ? 100 : 256;
  if (!c->act) c->act = cnf ? "tanh" : "relu";
  if (!c->schedule) c->schedule = cnf ? "constant" : "cosine";
  if (isnan(c->lr)) c->lr = cnf ? 1e-3 : 5e-3;
  if (isnan(c->weight_decay)) c->weight_decay = cnf ? 1e-5 : 0.0;
  if (isnan(c->clip)) c->clip = cnf ? 0.0 : 5.0;
}

/* The CNF options of c (FFJORD's defaults where unset). */
static int cnf_options(const cfg *c, nf_cnf_opts *o)
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
  if (c->trace && nf_cnf_trace_parse(c->trace, &o->trace)) return die("--trace: %s", nf_errmsg());
  if (c->act && nf_odenet_act_parse(c->act, &o->act)) return die("--act: %s", nf_errmsg());
  if (c->dynamics && nf_odenet_kind_parse(c->dynamics, &o->kind))
    return die("--dynamics: %s", nf_errmsg());
  return 0;
}

/* A flow of c->layers CNF blocks on R^dim. */
static int build_cnf(const cfg *c, size_t dim, nf_rng *rng, nf_flow **out)
{
  nf_cnf_opts o;
  int rc = cnf_options(c, &o);
  if (rc) return rc;
  nf_flow *flow = nf_flow_new(dim, 0, NF_BASE_STD_NORMAL);
  for (size_t k = 0; flow && k < c->layers; k++) {
    nf_layer *layer = nf_cnf_new(dim, 0, &o, rng);
    if (!layer || nf_flow_push(flow, layer)) {
      nf_flow_free(flow);
      return die("--flow cnf: %s", nf_errmsg());
    }
  }
  *out = flow;
  return flow ? 0 : die("--flow cnf: %s", nf_errmsg());
}

/* The flow c describes, with parameters drawn from rng. */
static int build_flow(const cfg *c, size_t dim, nf_rng *rng, nf_flow **out)
{
  if (!strcmp(c->flow, "cnf")) return build_cnf(c, dim, rng, out);
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
  *out = nf_recipe_build(dim, 0, &recipe, rng);
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

/* Training and test sets: fresh toy points from two streams, or a split of a CSV or .npy file. */
static int load_data(const cfg *c, nf_dataset **train, nf_dataset **test)
{
  nf_rng rng;
  nf_rng_seed(&rng, c->seed_plus_one - 1);
  nf_rng_jump(&rng); /* a stream apart from the flow's initialisation */
  nf_status st;
  if (is_toy(c->data)) {
    size_t n = c->iters * c->batch;
    nf_rng test_rng = rng;
    nf_rng_jump(&test_rng);
    st = nf_toy_sample(c->data, n < TOY_MAX_TRAIN_POINTS ? n : TOY_MAX_TRAIN_POINTS, &rng, train);
    if (!st && (st = nf_toy_sample(c->data, TOY_TEST_POINTS, &test_rng, test)))
      nf_dataset_free(*train);
  } else {
    nf_dataset *all;
    double frac = isnan(c->test_frac) ? 0.2 : c->test_frac;
    if (!(st = read_file(c->data, &all))) {
      st = nf_dataset_split(all, 1.0 - frac, &rng, train, test);
      nf_dataset_free(all);
    }
  }
  return st ? die("--data %s: %s", c->data, nf_errmsg()) : 0;
}

/* Progress bar on stderr: iterations, batch loss, elapsed time. */
static int draw_progress(const nf_train_progress *p, void *user)
{
  const char *name = user;
  size_t every = p->total / 100 ? p->total / 100 : 1;
  if (p->iteration % every && p->iteration != p->total) return 0;
  int width = 30, filled = (int)(width * p->iteration / p->total);
  fprintf(stderr, "\r%-8s [%.*s%*s] %zu/%zu  loss %.4f  %.1fs", name, filled,
          "##############################", width - filled, "", p->iteration, p->total,
          p->loss, p->seconds);
  if (p->iteration == p->total) fputc('\n', stderr);
  return 0;
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

/* Trains flow per c on train, evaluates on test, fills r. */
static int train_and_test(const cfg *c, nf_flow *flow, const nf_dataset *train,
                          const nf_dataset *test, nf_rng *rng, result *r)
{
  nf_adam_opts aopts = nf_adam_defaults();
  aopts.lr = c->lr;
  aopts.weight_decay = c->weight_decay;
  aopts.clip_norm = c->clip;
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), &aopts);
  nf_trainer_opts topts = nf_trainer_defaults();
  topts.batch_size = c->batch;
  topts.iterations = c->iters;
  topts.callback = isatty(STDERR_FILENO) ? draw_progress : NULL;
  topts.user = (void *)c->flow;
  topts.schedule = strcmp(c->schedule, "constant") ? NF_LR_COSINE : NF_LR_CONSTANT;
  if (strcmp(c->schedule, "constant") && strcmp(c->schedule, "cosine")) {
    nf_adam_free(adam);
    return die("--schedule: expected cosine or constant, got '%s'", c->schedule);
  }
  nf_trainer *trainer = adam ? nf_trainer_new(flow, adam, train, NULL, &topts, rng) : NULL;
  nf_train_report report;
  nf_cnf_counters counters;
  int rc = 0;
  if (!trainer || nf_trainer_run(trainer, &report)) {
    rc = die("train %s: %s", c->flow, nf_errmsg());
  } else {
    r->continuous = cnf_totals(flow, &counters);
    r->iters = report.iterations;
    r->seconds = report.seconds;
    r->ms_per_iter = 1e3 * report.seconds / (double)report.iterations;
    r->nfe_forward = (double)counters.nfe / (double)report.iterations;
    r->nfe_backward = (double)counters.nfe_adjoint / (double)report.iterations;
    r->end_time = r->continuous ? nf_cnf_end_time(nf_flow_layer(flow, 0), nf_flow_params(flow) + nf_flow_param_offset(flow, 0)) : NAN;
    size_t m = train->n < TRAIN_NLL_ROWS ? train->n : TRAIN_NLL_ROWS;
    if (nf_flow_nll(flow, test->n, test->x, NULL, &r->test_nll) ||
        nf_flow_nll(flow, m, train->x, NULL, &r->train_nll))
      rc = die("evaluate %s: %s", c->flow, nf_errmsg());
  }
  r->flow = c->flow;
  r->params = nf_flow_n_params(flow);
  nf_trainer_free(trainer);
  nf_adam_free(adam);
  return rc;
}

/* Builds, trains and tests one flow on the given split. */
static int run_flow(cfg c, const nf_dataset *train, const nf_dataset *test, result *r)
{
  fill_defaults(&c);
  nf_rng rng;
  nf_rng_seed(&rng, c.seed_plus_one - 1);
  nf_flow *flow = NULL;
  int rc = build_flow(&c, train->dim, &rng, &flow);
  if (!rc) rc = train_and_test(&c, flow, train, test, &rng, r);
  nf_flow_free(flow);
  return rc;
}

/* key=value lines of one result, each key prefixed by prefix. */
static void print_keys(const char *prefix, const result *r)
{
  printf("%sparams=%zu\n%siters=%zu\n%strain_nll=%.6f\n%stest_nll=%.6f\n", prefix, r->params,
         prefix, r->iters, prefix, r->train_nll, prefix, r->test_nll);
  printf("%strain_seconds=%.3f\n%sms_per_iter=%.4f\n", prefix, r->seconds, prefix, r->ms_per_iter);
  if (r->continuous)
    printf("%snfe_forward=%.2f\n%snfe_backward=%.2f\n%send_time=%.6f\n", prefix, r->nfe_forward,
           prefix, r->nfe_backward, prefix, r->end_time);
}

static int cmd_train(cfg *c)
{
  if (!c->flow) c->flow = "realnvp";
  cfg filled = *c;
  fill_defaults(&filled);
  nf_dataset *train = NULL, *test = NULL;
  int rc = load_data(&filled, &train, &test);
  result r;
  if (!rc && !(rc = run_flow(*c, train, test, &r))) {
    printf("flow=%s\ndata=%s\ndim=%zu\nbatch=%zu\n", filled.flow, c->data, train->dim, filled.batch);
    print_keys("", &r);
  }
  nf_dataset_free(train);
  nf_dataset_free(test);
  return rc;
}

static int cmd_compare(cfg *c)
{
  char names[256];
  const char *flow[MAX_FLOWS];
  size_t k = 0;
  snprintf(names, sizeof names, "%s", c->flows ? c->flows : "realnvp,cnf");
  for (char *tok = strtok(names, ","); tok; tok = strtok(NULL, ","))
    if (k < MAX_FLOWS) flow[k++] = tok;
  if (k == 0) return die("--flows: expected names like realnvp,cnf");
  cfg first = *c;
  first.flow = flow[0];
  fill_defaults(&first); /* the split follows the first flow's batch and iterations */
  nf_dataset *train = NULL, *test = NULL;
  int rc = load_data(&first, &train, &test);
  result r[MAX_FLOWS];
  for (size_t i = 0; !rc && i < k; i++) {
    cfg one = *c;
    one.flow = flow[i];
    rc = run_flow(one, train, test, &r[i]);
  }
  if (!rc) {
    printf("data=%s  dim=%zu  train=%zu  test=%zu\n", c->data, train->dim, train->n, test->n);
    printf("%-10s %9s %10s %10s %10s %8s %8s\n", "flow", "params", "test_nll", "train_s",
           "ms/iter", "nfe_fwd", "nfe_bwd");
    for (size_t i = 0; i < k; i++) {
      printf("%-10s %9zu %10.4f %10.2f %10.3f", r[i].flow, r[i].params, r[i].test_nll,
             r[i].seconds, r[i].ms_per_iter);
      if (r[i].continuous) printf(" %8.1f %8.1f\n", r[i].nfe_forward, r[i].nfe_backward);
      else printf(" %8s %8s\n", "-", "-");
    }
    for (size_t i = 0; i < k; i++) {
      char prefix[64];
      snprintf(prefix, sizeof prefix, "%s.", r[i].flow);
      print_keys(prefix, &r[i]);
    }
  }
  nf_dataset_free(train);
  nf_dataset_free(test);
  return rc;
}

int main(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  int train = !strcmp(argv[1], "train"), compare = !strcmp(argv[1], "compare");
  if (!train && !compare) return die("unknown command '%s' (expected train or compare)", argv[1]);
  cfg c = {.iters = 2000, .threads = 1, .seed_plus_one = 2, .lr = NAN, .test_frac = NAN,
           .weight_decay = NAN, .clip = NAN, .scale_bound = NAN, .end_time = NAN,
           .rtol = NAN, .atol = NAN, .kinetic = NAN, .jacobian = NAN};
  int rc = parse_args(argc - 2, argv + 2, &c);
  if (rc) return rc;
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
  openblas_set_num_threads((int)c.threads);
#endif
  return train ? cmd_train(&c) : cmd_compare(&c);
}
