/* tests/helpers.h — numerical checks every bijector's test uses. */
#ifndef NFLOW_TEST_HELPERS_H
#define NFLOW_TEST_HELPERS_H

#include <check.h>
#include <stdint.h>
#include "nflow.h"

/* out[0..n) ~ N(0, scale^2). */
void th_randn(nf_rng *rng, size_t n, double scale, double *out);

/* max_i |a_i - b_i|. */
double th_max_abs_diff(size_t n, const double *a, const double *b);

/* Norm-wise relative error ||a - b||_inf / max(||b||_inf, floor). */
double th_rel_err(size_t n, const double *a, const double *b, double floor);

/* Fills theta[0..n_params) (the caller's parameters of layer) with N(0, scale^2) draws. */
void th_randomize_params(const nf_layer *layer, nf_rng *rng, double scale, double *theta);

/* Moves the flow's parameters by N(0, scale^2) draws from rng (asserted accepted). */
void th_perturb_flow(nf_flow *flow, nf_rng *rng, double scale);

/* Asserts layer != NULL (reporting nf_errmsg()) and returns a new array of its
   n_params parameters ~ N(0, scale^2) drawn from seed (caller frees; never
   NULL, also for n_params = 0). */
double *th_random_theta(const nf_layer *layer, uint64_t seed, double scale);

/* n x d points ~ N(0, scale^2) drawn from `seed` (caller frees). */
double *th_random_points(size_t n, size_t d, uint64_t seed, double scale);

/* Asserts that the layer with its constructor's parameters
   (nf_layer_init_params) is the identity in both directions on n rows (and
   contexts) ~ N(0, 2^2) from seed: |out - in| <= rel_tol |in| entrywise and
   each logdet[i] keeps its value to within rel_tol (rel_tol 0: exactly). */
void th_check_identity(const nf_layer *layer, size_t n, uint64_t seed, double rel_tol);

/* Asserts that make(v) gives NULL with a message naming fn and name for
   v = 0, -1, NaN and +Inf (a parameter that must be finite and > 0). */
void th_check_rejects_nonpositive(nf_layer *(*make)(double v), const char *fn, const char *name);

/* max |inverse(forward(z)) - z| over the batch; if logdet_cancel != NULL it
   receives max_i |logdet_forward_i + logdet_inverse_i|. */
double th_roundtrip_error(const nf_layer *layer, const double *theta, size_t n, const double *z,
                          const double *ctx, double *logdet_cancel);

/* max_i |logdet_i - log|det J_i||, J_i the central-difference Jacobian (step h)
   of row i's map, its determinant by LU with partial pivoting. */
double th_logdet_error(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                       const double *ctx, double h);

/* Norm-wise relative errors of vjp's gradients (input, context and theta)
   against central differences (step h) of L = sum(g_out * out) +
   sum(g_logdet * logdet) + the layer's penalty (if it has one; applied with
   penalty_weight 1), with g_out and
   g_logdet ~ N(0, 1) drawn from `seed`. A field is 0 where there is nothing to
   check (no context, no parameters). */
typedef struct th_vjp_errors {
  double in, ctx, params;
} th_vjp_errors;
th_vjp_errors th_vjp_check(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                           const double *ctx, uint64_t seed, double h);

/* Bounds and finite-difference steps of th_check_bijector. */
typedef struct th_tolerances {
  double roundtrip; /* max |inverse(forward(z)) - z| */
  double cancel;    /* max_i |logdet_forward_i + logdet_inverse_i| */
  double logdet;    /* max_i |logdet_i - log|det J_i|| (th_logdet_error) */
  double vjp;       /* norm-wise relative error of each vjp gradient (th_vjp_check) */
  double h_logdet;  /* step of the finite-difference Jacobian */
  double h_vjp;     /* step of the finite-difference gradients */
} th_tolerances;

/* 1e-10, 1e-10, 1e-6, 1e-6 with steps h_logdet = 1e-5 and h_vjp = 1e-6. */
th_tolerances th_default_tolerances(void);

/* Asserts that a bijector is consistent on the n rows z (context ctx, NULL
   iff layer->ctx_dim == 0): inverse(forward(z)) = z, the two log-dets cancel,
   and in BOTH directions (at z) the log-det matches the finite-difference
   Jacobian and vjp matches central differences for the input, context and
   parameter gradients; tol NULL means th_default_tolerances(). Prints one line
   per check with the measured maximum, headed by label (NULL: the type name). */
void th_check_bijector(const char *label, const nf_layer *layer, const double *theta, size_t n, const double *z,
                       const double *ctx, const th_tolerances *tol);

/* One case of a family's bijector checks: returns a layer of dimension d and
   in *theta a new array (caller frees) of parameters drawn from seed in the
   family's regime `variant`, and may move the n test rows z (n x d, drawn by
   the caller) into the region the regime is checked on. */
typedef nf_layer *(*th_case_fn)(size_t d, uint64_t seed, int variant, size_t n, double *z,
                                double **theta);

/* The common battery of a context-free bijector family in one regime:
   th_check_bijector on the cases d = 1, 2, 5 with three seeds each, 20 rows
   ~ N(0, row_scale^2) per case, and th_check_vjp_accumulates on a case with
   d = 3 and 4 rows; label names the family and regime in the log. */
void th_check_bijector_family(const char *label, th_case_fn make, int variant, double row_scale);

/* Asserts vjp's accumulation contract in both directions on the n rows z:
   it WRITES g_in (exactly the same values on every call, also with g_theta
   NULL), ADDS into g_ctx (to 1e-14) and g_theta (a second call doubles the
   parameter gradient, to a norm-wise relative 1e-14), treats g_logdet == NULL
   as zero and gives the same parameter gradient, exactly, whichever of g_in
   and g_ctx are wanted. */
void th_check_vjp_accumulates(const nf_layer *layer, const double *theta, size_t n,
                              const double *z, const double *ctx);

/* Asserts that a and b (the same family, e.g. a layer and its saved-and-loaded
   copy) map n rows ~ N(0, 1) from seed (contexts too) identically, bit for bit,
   outputs and log-dets, in both directions with parameters theta. */
void th_check_same_maps(const nf_layer *a, const nf_layer *b, const double *theta, size_t n,
                        uint64_t seed);

/* Asserts the checked entry points' documented answers to bad calls, in both
   directions, with parameters theta: NF_EINVAL for a NULL layer, NULL theta
   (when the layer has parameters), an unknown direction, n = 0, NULL input,
   output, g_out, context (when the layer takes one) or workspace (when it
   needs one), and an output aliasing the input; NF_ENONFINITE naming the row
   and column of a NaN or Inf in the input or context. Outputs, cotangents and
   the parameter gradient g_theta are left untouched by all of these, and the
   same calls with good arguments succeed. (Pushing onto a flow of another
   dimension or context width: th_check_conditional.) */
void th_check_bad_calls(const nf_layer *layer, const double *theta);

/* Asserts that the flow's theta with entry k set to bad is refused with
   status want (NF_ENONFINITE for a non-finite value, NF_EDOMAIN for a finite
   one that makes a map singular) by nf_flow_check_params, by
   nf_flow_set_params (the flow's theta unchanged, and it still evaluates)
   and, when k lies in layer L's slice, by nf_layer_check_params on that
   slice; every message names "parameter j", j the index within the base's or
   the layer's slice. Evaluation never scans theta: this is where a bad
   parameter is caught. */
void th_check_param_refused(nf_flow *flow, size_t k, double bad, nf_status want);

/* A family's constructor for the flow-level checks: a layer of dimension dim
   whose initial parameters come from rng; a family that takes a context
   uses ctx_dim, the others ignore it (and give ctx_dim 0). */
typedef nf_layer *(*th_make_fn)(size_t dim, size_t ctx_dim, nf_rng *rng);

/* A flow on R^dim with context width ctx_dim of `layers` layers from make
   (one rng seeded with seed); if scale > 0 its theta is then set to
   N(0, scale^2) draws through nf_flow_set_params. Asserts success. */
nf_flow *th_flow_of(th_make_fn make, size_t dim, size_t ctx_dim, size_t layers, uint64_t seed,
                    double scale);

/* Asserts that the conditional flow cond (context width 2) works with
   parameters ~ N(0, 0.3^2): log_prob, sample and nll_grad succeed with finite
   results; if plain != NULL (the same chain built without a context, same
   parameter count) it is given the same theta and cond's log p must equal
   plain's bit for bit (its layers receive ctx = NULL), else log p must depend
   on ctx. */
void th_check_conditional_flow(nf_flow *cond, nf_flow *plain);

/* The family made by make inside a conditional flow (d = 3, ctx_dim 2), two
   layers deep: an unconditional family (ctx_dim 0) joins it and gives the
   same log p as in an unconditional flow; a conditional one depends on ctx
   (th_check_conditional_flow). Also asserts nf_flow_push's NF_EDIM for a
   layer of another dimension (and, for a conditional family, of another
   context width), the layer being freed (valgrind sees no leak). */
void th_check_conditional(th_make_fn make);

/* Two threads evaluate different halves of the n rows (x, ctx) at once on the
   one const flow, each with its own workspace and gradient buffer, several
   times over (nf_flow_log_prob_ws and nf_flow_nll_grad_ws); asserts that every
   result equals, bit for bit, the same call made alone. */
void th_check_threads(const nf_flow *flow, size_t n, const double *x, const double *ctx);

/* The flow-level battery of a family: th_check_conditional(make), then
   th_check_threads on 40 rows of a 3-D flow of three layers from make (with
   a context of width 2 if the family takes one), theta ~ N(0, scale^2)
   (scale 0: the constructors' parameters). */
void th_check_family_flows(th_make_fn make, double scale);

/* Integral of exp(log p) of a 2-D flow over [-a, a]^2 by the midpoint rule on
   an m x m grid. */
double th_grid_mass(nf_flow *flow, double a, size_t m);

/* Asserts |th_grid_mass(flow, a, m) - 1| <= tol, printing the mass after label. */
void th_check_grid_mass(const char *label, nf_flow *flow, double a, size_t m, double tol);

/* Saves the unconditional flow to a file in a fresh temporary folder, loads
   it back (both removed after) and asserts the copy has the same layers and
   theta, and the same log p on the n rows x, bit for bit; returns the copy
   (caller frees). */
nf_flow *th_save_load(const nf_flow *flow, size_t n, const double *x);

/* One adjoint configuration of a CNF: ODE method, gradient mode, name. */
typedef struct th_cnf_mode {
  nf_ode_method method;
  nf_ode_grad grad;
  const char *name;
} th_cnf_mode;

/* Every adjoint mode a CNF offers: backsolve (DOPRI5, Adams), checkpointed
   (Adams, BDF) and discrete (DOPRI5, RK4), backsolve/DOPRI5 first. */
#define TH_N_CNF_MODES 6
extern const th_cnf_mode th_cnf_modes[TH_N_CNF_MODES];

/* Path of the fixture tests/data/name under $top_srcdir (or "."); valid until the next call. */
const char *th_data_path(const char *name);

/* Asserts that reader (nf_dataset_read_csv, nf_dataset_read_npy) fails on fixture
   name with status, leaves its output untouched and sets nf_errmsg() to the
   fixture's path followed by suffix. */
void th_assert_read_error(nf_status (*reader)(const char *, nf_dataset **), const char *name,
                          nf_status status, const char *suffix);

/* Writes len bytes to path (asserting success): fixtures of the file tests. */
void th_write_file(const char *path, const void *bytes, size_t len);

/* The bytes of path (asserting it reads; caller frees), its length in *len. */
unsigned char *th_read_file(const char *path, size_t *len);

/* Runs a suite in the normal fork mode; returns EXIT_SUCCESS or EXIT_FAILURE. */
int th_run_suite(Suite *suite);

/* Runs the NULL-terminated tests (START_TEST names) as the suite `name` of one
   test case, with a per-test timeout in seconds (0: 60 s; it guards against
   hangs only — CK_TIMEOUT_MULTIPLIER stretches it for slow builds). */
int th_run_tests(const char *name, double timeout, const TTest *const *tests);

#endif
