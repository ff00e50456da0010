/* nflow/target.h — a target: a smooth scalar function on R^dim with its
   gradient, evaluated on a batch. As a density target it is an unnormalised
   log density log p~(x) = log p(x) + log Z, the distribution a flow learns to
   sample by reverse KL (objective.h); as an observable it is any F(x) whose
   expectation E_q[F] a flow is trained on or reweighted to (importance.h).

   Built-in targets for examples and tests:
   - the 2-D double well, log p~(x) = -4 (x1^2 - 1)^2 - x2^2 / 2;
   - a Gaussian mixture with diagonal components;
   - phi^4 theory on an L x L periodic lattice (Albergo, Kanwar & Shanahan
     2019), log p~ = -S with S(phi) = sum_x [ -2 sum_{mu=1,2} phi_x phi_{x+mu}
     + (4 + m^2) phi_x^2 + lambda phi_x^4 ], the lattice stored row-major
     (site (r, c) at index r L + c).

   A target is immutable once made; nf_target_eval is reentrant when the
   callback is (the built-ins are), so threads may share one target. */
#ifndef NFLOW_TARGET_H
#define NFLOW_TARGET_H

#include <stddef.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A user's target: writes f[i] = f(x_i) for the n rows of x (n x dim,
   row-major) and, when grad is not NULL, grad (n x dim) = the gradient of f
   at each row. Returns 0 on success; nonzero reports x outside the target's
   domain (NF_EDOMAIN for the caller). Must be reentrant to be used from
   several threads at once. */
typedef int (*nf_target_fn)(size_t n, size_t dim, const double *x, double *f, double *grad,
                            void *user);

typedef struct nf_target nf_target;

/* A target from a user's callback on R^dim; user is passed back to it and
   borrowed (it must outlive the target). NULL (with nf_errmsg) on dim == 0,
   fn == NULL or no memory. Its name is "user". */
nf_target *nf_target_new(size_t dim, nf_target_fn fn, void *user);

/* The 2-D double well above (name "doublewell"). NULL only on no memory. */
nf_target *nf_target_doublewell(void);

/* A mixture of k diagonal Gaussians on R^dim (name "mixture"):
   p~(x) = sum_j weights[j] N(x; means[j], diag(sigmas[j]^2)), with means and
   sigmas k x dim, so log Z = log sum_j weights[j] (1 for weights summing to 1).
   The arrays are copied. NULL (with nf_errmsg) on dim or k == 0, NULL arrays,
   a weight that is not finite and positive, a mean that is not finite or a
   sigma that is not finite and positive. */
nf_target *nf_target_mixture(size_t dim, size_t k, const double *weights, const double *means,
                             const double *sigmas);

/* phi^4 on an L x L periodic lattice (dim L^2, name "phi4"). NULL (with
   nf_errmsg) on L < 2, a non-finite m2, or lambda not finite and >= 0. (With
   lambda = 0 the action is bounded below only for m2 > 0.) */
nf_target *nf_target_phi4(size_t L, double m2, double lambda);

/* Frees the target; NULL is a no-op. */
void nf_target_free(nf_target *target);

/* The dimension, and the name ("doublewell", "mixture", "phi4", "user");
   0 and "" for NULL. */
size_t nf_target_dim(const nf_target *target);
const char *nf_target_name(const nf_target *target);

/* f(x_i) into f (n) and, if grad is not NULL, its gradient into grad
   (n x dim). NF_EINVAL on NULL target, x or f, or n == 0; NF_ENONFINITE
   naming the first non-finite entry of x, or the first row whose value or
   gradient the target made non-finite; NF_EDOMAIN if the callback returned
   nonzero. On failure f and grad are unspecified. */
nf_status nf_target_eval(const nf_target *target, size_t n, const double *x, double *f,
                         double *grad);

/* log Z = log of the integral of p~ where it is known: the mixture's exactly,
   the double well's by quadrature (to about 1e-14). NF_ESTATE for a target
   whose normaliser is unknown (user, phi4); NF_EINVAL for NULL arguments. */
nf_status nf_target_log_z(const nf_target *target, double *log_z);

/* phi^4's magnetisation M = sum_x phi_x of each of n lattice rows (n x L^2),
   into m (n). NF_EINVAL on NULL arguments, n == 0 or a target that is not phi4. */
nf_status nf_target_phi4_magnetisation(const nf_target *target, size_t n, const double *phi,
                                       double *m);

#ifdef __cplusplus
}
#endif
#endif
