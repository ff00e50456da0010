/* nflow/objective.h — what a flow q is trained to minimise, beyond maximum
   likelihood: a weighted sum of
     nll_weight         x  the mean NLL of a data batch, -E_data[log q(x)]
                           (forward KL up to the data's entropy);
     reverse_kl_weight  x  E_q[log q(x) - log p~(x)] = KL(q || p) - log Z
                           against a target p~ (target.h);
     expectation_weight x  E_q[F(x)] for an observable F (a target used as a
                           function, with its gradient);
     entropy_weight     x  H[q] = -E_q[log q(x)] (a negative weight maximises
                           the entropy).
   Expectations over q are Monte Carlo means over n reparametrised draws
   x = T(mu + sigma eps), eps ~ N(0, I), differentiated through the draws
   (nf_flow_sample_grad_ws): the gradient is the exact gradient of the
   estimate at those draws. Treating the samples as fixed gives another,
   wrong, gradient (the lecture notes' 004 "wrong gradient!"; the test suite
   shows the difference).

   Gradient estimators for the log q terms: NF_GRAD_TOTAL, the total
   derivative of the estimate; NF_GRAD_STL, "sticking the landing" (Roeder,
   Wu & Duvenaud 2017), which drops d/dtheta log q_theta(x) at fixed x (zero
   in expectation: E_q[score] = 0), so that its variance vanishes as q
   approaches p. Both are unbiased; STL costs one more density pass.

   Tempering: with beta in (0, 1) the reverse-KL term targets p~^beta, a
   flatter density with lower barriers; a trainer can anneal beta up to 1
   (nf_trainer_opts.anneal_iterations), which keeps a flow that starts broad
   from collapsing onto one mode of a multimodal target (reverse KL is
   mode-seeking).

   Sample terms need an unconditional flow. A mixed forward/reverse
   objective sets both nll_weight and reverse_kl_weight. */
#ifndef NFLOW_OBJECTIVE_H
#define NFLOW_OBJECTIVE_H

#include <stddef.h>
#include <stdint.h>
#include "nflow/status.h"
#include "nflow/flow.h"
#include "nflow/target.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_grad_estimator {
  NF_GRAD_TOTAL = 0, /* the reparametrised total derivative */
  NF_GRAD_STL        /* sticking the landing: without the score term */
} nf_grad_estimator;

/* "total", "stl"; nf_grad_estimator_parse reads them back (NF_EINVAL otherwise). */
const char *nf_grad_estimator_name(nf_grad_estimator estimator);
nf_status nf_grad_estimator_parse(const char *name, nf_grad_estimator *estimator);

typedef struct nf_objective {
  double nll_weight;         /* data term (maximum likelihood) */
  double reverse_kl_weight;  /* E_q[log q - log p~]; needs target */
  double expectation_weight; /* E_q[F]; needs observable */
  double entropy_weight;     /* H[q] */
  const nf_target *target;     /* borrowed */
  const nf_target *observable; /* borrowed */
  nf_grad_estimator estimator;
  double beta;                 /* inverse temperature of the target in the reverse-KL term,
                                  E_q[log q - beta log p~], in (0, 1]; 0 means 1 */
} nf_objective;

/* Maximum likelihood: nll_weight 1, nothing else. */
nf_objective nf_objective_max_likelihood(void);

/* Reverse KL against target: reverse_kl_weight 1, the total-derivative estimator. */
nf_objective nf_objective_reverse_kl(const nf_target *target);

/* 1 if the objective has a term that samples from q (reverse KL, E_q[F], H[q]). */
int nf_objective_samples(const nf_objective *objective);

/* NF_OK for an objective a flow of this dim and ctx_dim can use: finite
   weights, not all zero, a target (observable) of the flow's dimension when
   its weight is nonzero, sample terms only on an unconditional flow, a known
   estimator. NF_EINVAL / NF_EDIM with a message otherwise. */
nf_status nf_objective_check(const nf_objective *objective, size_t dim, size_t ctx_dim);

/* The estimate's parts at the last evaluation: NaN for a term not computed,
   except the entropy, estimated whenever q is sampled. */
typedef struct nf_objective_terms {
  double nll;         /* mean NLL of the data rows */
  double reverse_kl;  /* mean of log q - log p~ over the draws */
  double expectation; /* mean of F */
  double entropy;     /* mean of -log q */
} nf_objective_terms;

/* The objective's Monte Carlo estimate *loss and its gradient, OVERWRITING
   grad (n_params): sample terms over the n_draws draws eps (n_draws x dim
   standard normals, the caller's: fixed draws give common random numbers;
   may be NULL with n_draws == 0 when there is no sample term), the data term
   over n_data rows x_data (ctx_data for a conditional flow; NULL with 0 when
   nll_weight is 0). Noise (Hutchinson probes) is keyed by seed. log_w
   (n_draws, may be NULL) receives log p~(x) - log q(x) of the draws when
   there is a reverse-KL term (reverse_kl_weight != 0; else it is left
   untouched, even with a target set; log p~ scaled by beta), terms (may be
   NULL) the parts (entropy whenever q is sampled). n_draws and n_data <=
   the workspace's rows. The flow evaluates with its training estimators (as
   nf_flow_nll_grad_ws, including a CNF's penalty on the data term). On
   failure grad is zeroed and *loss untouched. */
nf_status nf_objective_grad_ws(const nf_objective *objective, const nf_flow *flow,
                               nf_flow_ws *ws, uint64_t seed, size_t n_draws, const double *eps,
                               size_t n_data, const double *x_data, const double *ctx_data,
                               double *loss, double *grad, double *log_w,
                               nf_objective_terms *terms);

#ifdef __cplusplus
}
#endif
#endif
