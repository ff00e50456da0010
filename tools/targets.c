/* tools/targets.c — targets of the nflow tool: the built-ins by name, a
   user's callback from a shared library, and the importance-sampling report. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "targets.h"

/* A user's nf_target_fn from "FILE.so:SYMBOL"; 0 or a message and 2. */
static int open_library(const target_spec *spec, tool_target *out)
{
  const char *colon = strrchr(spec->lib, ':');
  char path[4096];
  if (!colon || colon == spec->lib || !colon[1] || (size_t)(colon - spec->lib) >= sizeof path) {
    fprintf(stderr, "nflow: --target-lib: expected FILE.so:SYMBOL, got '%s'\n", spec->lib);
    return 2;
  }
  if (!spec->dim) {
    fprintf(stderr, "nflow: --target-lib needs --dim D, the dimension of the target\n");
    return 2;
  }
  memcpy(path, spec->lib, (size_t)(colon - spec->lib));
  path[colon - spec->lib] = '\0';
  out->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!out->handle) {
    fprintf(stderr, "nflow: --target-lib: %s\n", dlerror());
    return 2;
  }
  void *sym = dlsym(out->handle, colon + 1);
  if (!sym) {
    fprintf(stderr, "nflow: --target-lib: no symbol '%s' in %s\n", colon + 1, path);
    return 2;
  }
  nf_target_fn fn;
  memcpy(&fn, &sym, sizeof fn); /* a data pointer to a function pointer, as POSIX allows */
  out->target = nf_target_new(spec->dim, fn, NULL);
  snprintf(out->label, sizeof out->label, "user:%s", colon + 1);
  return 0;
}

int tool_target_open(const target_spec *spec, tool_target *out)
{
  memset(out, 0, sizeof *out);
  if (spec->name && spec->lib) {
    fprintf(stderr, "nflow: --target and --target-lib exclude each other\n");
    return 2;
  }
  int rc = 0;
  if (spec->lib) {
    rc = open_library(spec, out);
  } else if (!strcmp(spec->name, "doublewell")) {
    out->target = nf_target_doublewell();
  } else if (!strcmp(spec->name, "mixture")) { /* four unit-weight modes on a square, sigma 0.3 */
    static const double w[4] = {1, 1, 1, 1}, m[8] = {2, 0, 0, 2, -2, 0, 0, -2};
    static const double s[8] = {0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3};
    out->target = nf_target_mixture(2, 4, w, m, s);
  } else if (!strcmp(spec->name, "phi4")) {
    out->target = nf_target_phi4(spec->lattice ? spec->lattice : PHI4_DEFAULT_LATTICE,
                                 isnan(spec->mass2) ? -4.0 : spec->mass2,
                                 isnan(spec->lambda) ? 8.0 : spec->lambda);
  } else {
    fprintf(stderr, "nflow: --target: unknown target '%s' (expected doublewell, mixture or "
            "phi4, or --target-lib FILE.so:SYMBOL)\n", spec->name);
    return 2;
  }
  if (!rc && !out->target) {
    fprintf(stderr, "nflow: --target: %s\n", nf_errmsg());
    rc = 2;
  }
  if (!rc && !spec->lib) snprintf(out->label, sizeof out->label, "%s", spec->name);
  if (rc) tool_target_close(out);
  return rc;
}

void tool_target_close(tool_target *t)
{
  nf_target_free(t->target);
  if (t->handle) dlclose(t->handle);
  memset(t, 0, sizeof *t);
}

/* The observables reweighted to p: phi4's |M| and M^2, else up to 4
   coordinates; their names into names (m of them). */
static size_t observables(const tool_target *t, size_t n, const double *x, double *obs,
                          const char **names)
{
  size_t d = nf_target_dim(t->target);
  if (!strcmp(nf_target_name(t->target), "phi4")) {
    for (size_t i = 0; i < n; i++) {
      double m;
      nf_target_phi4_magnetisation(t->target, 1, x + i * d, &m);
      obs[2 * i] = fabs(m);
      obs[2 * i + 1] = m * m;
    }
    names[0] = "abs_m";
    names[1] = "m2";
    return 2;
  }
  static const char *const mean_names[4] = {"mean_x0", "mean_x1", "mean_x2", "mean_x3"};
  size_t m = d < 4 ? d : 4;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < m; j++) obs[i * m + j] = x[i * d + j];
  for (size_t j = 0; j < m; j++) names[j] = mean_names[j];
  return m;
}

/* The fraction of the n raw samples with x_1 > 0 (the double well's right mode). */
static double right_mode_fraction(size_t n, size_t d, const double *x)
{
  size_t right = 0;
  for (size_t i = 0; i < n; i++) right += x[i * d] > 0;
  return (double)right / (double)n;
}

int tool_target_report(nf_flow *flow, const tool_target *t, nf_rng *rng, size_t n)
{
  size_t d = nf_flow_dim(flow);
  double *x = malloc(n * d * sizeof *x), *log_w = malloc(n * sizeof *log_w);
  double *obs = malloc(n * 4 * sizeof *obs), mean[4], err[4], log_z;
  const char *names[4];
  nf_importance imp;
  int rc = x && log_w && obs ? 0 : 1;
  if (rc) fprintf(stderr, "nflow: out of memory for %zu samples\n", n);
  nf_flow_set_seed(flow, 0);
  if (!rc && (nf_importance_sample(flow, rng, t->target, n, x, log_w) ||
              nf_importance_summary(n, log_w, &imp))) {
    fprintf(stderr, "nflow: importance sampling: %s\n", nf_errmsg());
    rc = 1;
  }
  size_t m = rc ? 0 : observables(t, n, x, obs, names);
  if (!rc && nf_importance_mean(n, log_w, m, obs, mean, err)) {
    fprintf(stderr, "nflow: reweighting: %s\n", nf_errmsg());
    rc = 1;
  }
  if (!rc) {
    printf("target=%s\nsamples=%zu\ness=%.6f\nlogz=%.6f\nlogz_err=%.6f\n", t->label, n, imp.ess,
           imp.log_z, imp.log_z_err);
    if (nf_target_log_z(t->target, &log_z) == NF_OK) printf("logz_exact=%.6f\n", log_z);
    if (!strcmp(t->label, "doublewell")) printf("mode_frac=%.6f\n", right_mode_fraction(n, d, x));
    for (size_t j = 0; j < m; j++) printf("%s=%.6g\n%s_err=%.3g\n", names[j], mean[j], names[j], err[j]);
  }
  free(x);
  free(log_w);
  free(obs);
  return rc;
}
