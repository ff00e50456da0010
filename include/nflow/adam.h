/* nflow/adam.h — the Adam optimizer (Kingma & Ba 2015) over a flat parameter
   vector, with optional weight decay (classic L2 or decoupled, AdamW:
   Loshchilov & Hutter 2019) and global gradient-norm clipping.

   One step t = 1, 2, ... with gradient g of length n:
     g <- g * min(1, clip_norm / ||g||_2)           (if clip_norm > 0)
     g <- g + weight_decay * theta                   (L2: decoupled == 0)
     m <- beta1 m + (1 - beta1) g
     v <- beta2 v + (1 - beta2) g^2
     theta <- theta - lr weight_decay theta          (AdamW: decoupled != 0)
     theta <- theta - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
   Clipping acts on the caller's gradient before the L2 term is added, as
   torch.nn.utils.clip_grad_norm_ followed by torch.optim.Adam would; the
   AdamW decay multiplies theta by (1 - lr weight_decay) as torch.optim.AdamW. */
#ifndef NFLOW_ADAM_H
#define NFLOW_ADAM_H

#include <stddef.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_adam_opts {
  double lr;           /* step size, > 0 */
  double beta1;        /* first-moment decay, in [0, 1) */
  double beta2;        /* second-moment decay, in [0, 1) */
  double eps;          /* denominator guard, > 0 */
  double weight_decay; /* >= 0; 0 = none */
  int decoupled;       /* nonzero: AdamW decay of theta; 0: L2 term added to g */
  double clip_norm;    /* >= 0; cap on ||g||_2 before the step, 0 = no clipping */
} nf_adam_opts;

typedef struct nf_adam nf_adam;

/* The defaults: lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8, no decay, no clipping. */
nf_adam_opts nf_adam_defaults(void);

/* An optimizer for n parameters with moments zeroed and step count 0;
   opts == NULL means the defaults (the options are copied). NULL (with
   nf_errmsg) on n == 0, an option out of range (lr <= 0, a beta outside
   [0, 1), eps <= 0, negative or non-finite decay or clip) or no memory. */
nf_adam *nf_adam_new(size_t n, const nf_adam_opts *opts);

/* Frees the optimizer; NULL is a no-op. */
void nf_adam_free(nf_adam *adam);

/* One Adam step on params[0..n) with gradient grad[0..n) (read only).
   NF_EINVAL on NULL arrays; NF_ENONFINITE if grad has a NaN or Inf: then
   params, the moments and the step count are untouched. */
nf_status nf_adam_step(nf_adam *adam, double *params, const double *grad);

/* Sets the learning rate for the following steps (schedules); the moments
   are kept. NF_EINVAL if lr <= 0 or not finite. */
nf_status nf_adam_set_lr(nf_adam *adam, double lr);

/* Forgets the moments and the step count (restart); keeps the options. */
void nf_adam_reset(nf_adam *adam);

/* The optimizer's state, for checkpoints: copies the first and second
   moments (n doubles each, either pointer may be NULL) and returns the step
   count (0 for a NULL optimizer). */
size_t nf_adam_get_state(const nf_adam *adam, double *m, double *v);

/* Restores a state saved by nf_adam_get_state (moments of n doubles and step
   count t), so the following steps are bit for bit those the saved optimizer
   would have taken; the options (lr included) are kept. NF_EINVAL on a NULL
   argument, NF_ENONFINITE on a non-finite moment, NF_EDOMAIN on a negative
   second moment; the optimizer is unchanged on failure. */
nf_status nf_adam_set_state(nf_adam *adam, size_t t, const double *m, const double *v);

/* Number of parameters the optimizer was made for. */
size_t nf_adam_size(const nf_adam *adam);

/* Steps taken since creation or the last reset. */
size_t nf_adam_steps(const nf_adam *adam);

/* The options in force (lr as last set). */
nf_adam_opts nf_adam_options(const nf_adam *adam);

/* ||g||_2 of the last accepted step's gradient before clipping (0 before any step). */
double nf_adam_grad_norm(const nf_adam *adam);

#ifdef __cplusplus
}
#endif
#endif
