/* nflow/trainer.h — maximum-likelihood training of an nf_flow by minibatch
   Adam over an in-memory data set, in the style of GSL's odeiv2 driver: a
   small object made once, then stepped or run.

   Each epoch visits the training rows in a fresh random order (Fisher–Yates
   shuffle from the trainer's own copy of the rng); an epoch is ceil(n / batch)
   steps, the last batch holding the n mod batch leftover rows if any. A step
   gathers the batch, sets the flow's flat gradient to d(mean NLL)/d theta
   (nf_flow_nll_grad) and takes one nf_adam_step on the flat parameters.

   Conditional flows (ctx_dim > 0) learn p(x | y): nf_trainer_set_context
   gives the context rows y (one per training row, and one per validation row
   if there is a validation set), which must be set before the first step.
   The batch then gathers each context row with its x row, so the two stay
   paired through the shuffles, and validation evaluates p(x | y) on the
   validation pairs.

   Best parameters and early stopping: with restore_best the trainer keeps a
   copy of theta at each new lowest validation NLL and, at the end of
   nf_trainer_run, sets the flow to it (the report names the iteration); the
   parameters training had reached are kept too, so a later step or a saved
   state continues from them, not from the restored ones. With patience K > 0
   a run stops after K validations in a row without a new lowest NLL.

   The training curve: every curve_every steps the trainer records a point
   (iteration, training seconds, mean batch loss since the last point, a
   validation NLL, CNF evaluation counts per step) for a callback and/or a CSV
   file. Validations and curve points are not counted in the seconds.

   Divergence: the trainer smooths the batch losses with an exponential moving
   average, s <- s + NF_TRAIN_EMA_WEIGHT (loss - s) (the first loss starts it;
   a time constant of about 50 steps), and keeps the lowest s seen, b. With
   m = NF_TRAIN_DIVERGE_NATS x dim nats, each loss enters the average capped
   at b + 2m, so that a single outlier batch (healthy runs have them) moves s
   by at most 2m NF_TRAIN_EMA_WEIGHT, while a sustained climb still takes s
   past b + m. When s stays more than m above b for NF_TRAIN_DIVERGE_STEPS
   steps in a row, the trainer marks the run diverged (the progress and the
   report say so, with the iteration and both values); training goes on, and
   the library prints nothing. Saved states carry the average.

   Whole-state checkpoints (nf_trainer_save_state / nf_trainer_load_state):
   theta, the optimizer's moments and step count, the shuffling rng, the
   counters, this epoch's order and position, the best parameters and the
   noise seed, so that training N steps equals training k, saving, loading
   into a new trainer over the same flow architecture and data, and training
   N - k more, bit for bit.

   Data-dependent initialisation (actnorm, actnorm.h): with opts.data_init
   (default 1), the first step begins with nf_flow_init_from_data on its
   batch (x and context rows), then takes its gradient step from there. The
   rule is decided once, when the trainer is made: it initialises only if
   the flow's parameters are fresh then (nf_flow_params_fresh: nothing was
   written through nf_flow_set_params, so no parameters set by the caller or
   loaded from a model file), and never after nf_trainer_load_state (a
   resume, whatever its iteration count). Set or load parameters before
   nf_trainer_new, or pass data_init = 0, to keep them. If the first step
   fails, the flow gets its fresh parameters back and the next step
   initialises again. A flow without layers that initialise from data is
   unaffected. Saved states need nothing more: the initialised parameters
   are parameters like any others.

   Other objectives (objective.h): with opts.objective, a step minimises that
   objective instead of the mean NLL: its sample terms (reverse KL against a
   target, E_q[F], H[q]) over batch_size fresh draws eps from the trainer's
   rng (saved in states, so a resume is bit for bit), its data term over the
   batch of training rows. An objective without a data term needs no
   training set: train may then be NULL (a one-row placeholder keeps the
   bookkeeping, so an epoch is one step), and there is no data-dependent
   initialisation. With a target, each step's importance weights give the
   Kish ESS per sample of its draws (progress, curve points, the CSV's ess
   column, the report). Validation stays the NLL of the validation set.

   The trainer borrows the flow, the optimizer, the data sets (contexts
   included) and the objective with its targets: they must outlive it, and no
   layer may be pushed onto the flow while it is in use. */
#ifndef NFLOW_TRAINER_H
#define NFLOW_TRAINER_H

#include <stddef.h>
#include <stdio.h>
#include "nflow/status.h"
#include "nflow/rng.h"
#include "nflow/flow.h"
#include "nflow/adam.h"
#include "nflow/dataset.h"
#include "nflow/objective.h"
#include "nflow/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NF_TRAIN_EMA_WEIGHT 0.02    /* weight of the newest batch loss in the smoothed loss */
#define NF_TRAIN_DIVERGE_NATS 10.0  /* per dimension: how far above its best the smoothed loss ... */
#define NF_TRAIN_DIVERGE_STEPS 200  /* ... must stay, for this many steps, to mark divergence */

/* What the progress callback sees after every step of nf_trainer_run. */
typedef struct nf_train_progress {
  size_t iteration; /* steps done so far by this trainer (1 after the first) */
  size_t total;     /* opts.iterations */
  size_t epoch;     /* epochs completed */
  double loss;      /* mean NLL of this step's batch (before the update) */
  double val_nll;   /* latest validation mean NLL; NaN if none yet */
  double seconds;   /* wall time since this nf_trainer_run began */
  double loss_smoothed; /* the moving average of the batch losses (see Divergence) */
  int diverged;     /* 1 once the trainer has marked the run diverged */
  double ess;       /* objective with a target: this step's ESS per sample; else NaN */
} nf_train_progress;

/* Progress callback: return 0 to continue, nonzero to stop the run early. */
typedef int (*nf_train_callback)(const nf_train_progress *progress, void *user);

/* One point of the training curve. */
typedef struct nf_train_curve_point {
  size_t iteration;    /* steps done */
  double seconds;      /* wall time spent in steps since the trainer began
                          (across saved states), evaluations excluded */
  double train_loss;   /* row-weighted mean batch NLL of the steps since the last point */
  double val_loss;     /* validation NLL at this iteration; NaN without a validation set */
  int continuous;      /* 1 if the flow has CNF layers: the two counts below apply */
  double nfe_forward;  /* CNF right-hand side evaluations per step since the last point */
  double nfe_backward; /* CNF adjoint evaluations per step since the last point */
  double ess;          /* objective with a target: mean ESS per sample of the steps
                          since the last point; else NaN */
} nf_train_curve_point;

/* Curve callback: return 0 to continue, nonzero to stop the run early. */
typedef int (*nf_train_curve_fn)(const nf_train_curve_point *point, void *user);

/* Learning-rate schedule over opts.iterations steps, from the optimizer's lr
   at nf_trainer_new (lr0) down to lr_min. */
typedef enum nf_lr_schedule {
  NF_LR_CONSTANT = 0, /* lr0 throughout */
  NF_LR_COSINE        /* lr_min + (lr0 - lr_min)(1 + cos(pi t / T)) / 2 at step t of T
                         (Loshchilov & Hutter 2017, without restarts) */
} nf_lr_schedule;

typedef struct nf_trainer_opts {
  size_t batch_size;          /* rows per step, >= 1; capped at the training set's n */
  size_t iterations;          /* steps nf_trainer_run takes the trainer up to, in total */
  size_t val_every;           /* validate every k steps and at the end of a run; 0 = never */
  nf_train_callback callback; /* may be NULL */
  void *user;                 /* passed to the callback */
  nf_lr_schedule schedule;    /* default NF_LR_CONSTANT */
  double lr_min;              /* NF_LR_COSINE: final learning rate, in [0, lr0) */
  int restore_best;           /* nonzero: end a run at the best validated theta (default 0) */
  size_t patience;            /* stop after this many validations without improvement; 0 = never */
  size_t curve_every;         /* a curve point every k steps and at a run's last step; 0 = none */
  nf_train_curve_fn curve;    /* may be NULL */
  void *curve_user;           /* passed to curve */
  FILE *curve_csv;            /* may be NULL: a header line "iter,seconds,train_loss,val_loss"
                                 (",nfe_forward,nfe_backward" for a CNF flow, then ",ess"
                                 for an objective with a target) at the first
                                 point of a trainer, then one line per point, %.17g */
  const char *state_tag;      /* may be NULL: a caller's description of the run (options,
                                 architecture) saved in nf_trainer_save_state files and
                                 required equal by nf_trainer_load_state (NULL equals "");
                                 borrowed: it must outlive the trainer */
  int data_init;              /* nonzero (default 1): data-dependent initialisation at the
                                 first step of a fresh flow (see above) */
  const nf_objective *objective; /* NULL (default): maximum likelihood; else what a step
                                 minimises (see above); copied at nf_trainer_new, its
                                 targets borrowed */
  size_t anneal_iterations;   /* objective with a target: the first K steps temper it, beta
                                 rising linearly from anneal_beta0 at step 0 to 1 at step K
                                 (objective.h); 0 (default): the objective's own beta */
  double anneal_beta0;        /* in (0, 1]: the first step's beta */
  size_t threads;             /* worker threads of the steps, validation and objective
                                 draws (nf_flow_ws_new_threads): 0 or 1 (default): serial;
                                 at most NF_MAX_THREADS. nf_trainer_new sets the flow's
                                 own workspace to this count (nf_flow_set_threads), which
                                 the flow keeps after the trainer. Results are bit for
                                 bit the same for one count, and agree across counts
                                 to rounding */
} nf_trainer_opts;

/* Why a run ended before opts.iterations. */
typedef enum nf_train_stop {
  NF_STOP_NONE = 0, /* it did not: all iterations done (or a step failed) */
  NF_STOP_CALLBACK, /* the progress or curve callback returned nonzero */
  NF_STOP_PATIENCE  /* opts.patience validations without improvement */
} nf_train_stop;

/* Summary of a run. */
typedef struct nf_train_report {
  size_t iterations;   /* steps done by the trainer in total */
  size_t epochs;       /* epochs completed */
  int stopped;         /* 1 if the run stopped early (callback or patience), else 0 */
  nf_train_stop stop;  /* why */
  char stop_reason[160]; /* the reason in words ("" if it did not stop early) */
  size_t restored_iteration; /* restore_best: the iteration whose theta the flow
                                holds after the run (the last one if it was the
                                best); 0 if there was no validation to go by */
  double train_loss;   /* row-weighted mean of the batch NLLs over the last
                          completed epoch (over the steps of the current epoch
                          if none has completed); NaN before the first step */
  double val_nll_last; /* NLL of the validation set at its last evaluation; NaN if never */
  double val_nll_best; /* lowest validation NLL seen; NaN if never */
  size_t val_best_iteration; /* iteration of val_nll_best (0 if never) */
  double seconds;      /* wall time of this nf_trainer_run */
  double step_seconds; /* the part of it spent in training steps (validation and
                          curve points excluded) */
  double step_nfe, step_nfe_adjoint; /* CNF right-hand-side evaluations of this
                          run's steps, forward and adjoint (0 without a CNF) */
  double loss_smoothed;      /* moving average of the batch losses; NaN before a step */
  double loss_smoothed_best; /* its lowest value; NaN before a step */
  int diverged;              /* 1 if the smoothed loss stayed NF_TRAIN_DIVERGE_NATS x dim
                                above its best for NF_TRAIN_DIVERGE_STEPS steps (sticky) */
  size_t diverged_iteration; /* the step at which it was marked; 0 if not diverged */
  double diverged_loss, diverged_best; /* the smoothed loss and its best then; NaN if not */
  double ess_last;           /* objective with a target: the last step's ESS per sample; NaN
                                otherwise */
} nf_train_report;

typedef struct nf_trainer nf_trainer;

/* The defaults: batch 128, 1000 iterations, no validation, no callback,
   constant learning rate, no best restore, no early stopping, no curve,
   data-dependent initialisation on. */
nf_trainer_opts nf_trainer_defaults(void);

/* "constant", "cosine"; nf_lr_schedule_parse reads them back (NF_EINVAL otherwise,
   listing the choices; *schedule then untouched). */
const char *nf_lr_schedule_name(nf_lr_schedule schedule);
nf_status nf_lr_schedule_parse(const char *name, nf_lr_schedule *schedule);

/* "none", "callback", "patience" ("?" for another value). */
const char *nf_train_stop_name(nf_train_stop stop);

/* A trainer of flow by adam on train, validated on val (may be NULL), with a
   copy of rng for the shuffles; opts == NULL means the defaults. Reserves the
   flow's workspaces for one batch. NULL (with nf_errmsg) on a NULL argument,
   an empty data set, batch_size == 0, a data set whose dim differs from the
   flow's or with a non-finite entry, an optimizer whose size differs from the
   flow's parameter count, a bad schedule, an objective the flow cannot use
   (nf_objective_check), or no memory. train may be NULL only for an
   objective without a data term. A conditional flow is
   accepted but needs nf_trainer_set_context before its first step. */
nf_trainer *nf_trainer_new(nf_flow *flow, nf_adam *adam, const nf_dataset *train,
                           const nf_dataset *val, const nf_trainer_opts *opts,
                           const nf_rng *rng);

/* Gives a conditional flow's trainer the context y of p(x | y): train_ctx row
   i is the context of training row i, val_ctx row i that of validation row i;
   both have dim == the flow's ctx_dim. val_ctx is required if the trainer has
   a validation set and must be NULL otherwise. The trainer borrows the sets.
   May be called again to replace the contexts (from the next step on).
   NF_EINVAL on a NULL trainer or train_ctx, an unconditional flow, an empty
   context set or val_ctx given or missing against the validation set; NF_EDIM
   on a context whose dim is not ctx_dim or whose row count differs from its
   data set's; NF_ENONFINITE (with row and column) on a NaN or Inf. On failure
   the trainer keeps its previous contexts. */
nf_status nf_trainer_set_context(nf_trainer *trainer, const nf_dataset *train_ctx,
                                 const nf_dataset *val_ctx);

/* Collective (comm.h): makes the trainer one of comm->size data-parallel
   trainers, one per rank, each over its SHARD of the training (and
   validation) rows: rank r's train set holds global rows offset_r to
   offset_r + n_r - 1, offset_r being the rows of ranks 0 to r - 1. Every rank
   must have made its trainer with the same flow architecture and parameters,
   options and rng. Training is then the one-process training of the
   concatenated shards with the same global batch_size, up to rounding:
   one shuffle of the global rows from the same rng on every rank; each step
   takes the global batch, each rank the gradient of the NLL summed over its
   rows of it, summed over ranks (comm->sum, in rank order) and divided by the
   global batch size, so every rank takes the same optimizer step; the
   data-dependent initialisation runs on the whole first global batch, sent to
   every rank; validation is the global mean NLL. After each step and
   validation the ranks agree on a status (nf_comm_agree): one rank's failure
   (a non-finite NLL on its rows, say) is every rank's, with that rank's
   message. Callbacks run on every rank and must decide alike; a curve file
   is best given on one rank only. A saved state holds the global rows and a
   CRC of the shards' CRCs: it resumes on the same number of ranks and data.
   Maximum likelihood only (no opts.objective). Call it before the first step,
   on every rank, after nf_trainer_set_context for a conditional flow. NF_EINVAL
   for a NULL or unusable comm (returned without communicating) or trainer, an
   objective; NF_ESTATE after a step or a second time; NF_ENOMEM; or the
   communicator's status. On failure the trainer is left without the
   communicator and must not be stepped. */
nf_status nf_trainer_set_comm(nf_trainer *trainer, const nf_comm *comm);

/* Frees the trainer (not the flow, optimizer or data); NULL is a no-op. */
void nf_trainer_free(nf_trainer *trainer);

/* One iteration: next batch, gradient of its mean NLL, one Adam step. If loss
   is not NULL it receives the batch's mean NLL (before the update). On failure
   (NF_ESTATE for a conditional flow without nf_trainer_set_context,
   NF_ENONFINITE for a non-finite NLL or gradient, or the flow's status) the
   parameters are untouched and the iteration is not counted. */
nf_status nf_trainer_step(nf_trainer *trainer, double *loss);

/* Mean NLL of the validation set at the current parameters, -log p(x | y)
   with the validation context for a conditional flow (NF_EINVAL without a
   validation set, NF_ESTATE for a conditional flow without its context);
   records it as the latest and, if lowest, the best validation NLL. */
nf_status nf_trainer_validate(nf_trainer *trainer, double *nll);

/* Steps until opts.iterations steps have been done in total (so a stopped run
   resumes where it stopped), validating every val_every steps and after the
   last step, and calling the callback after every step and validation due at
   it. Stops early if the callback returns nonzero (NF_OK, report->stopped = 1)
   or a step fails (its status). report (may be NULL) is filled in either case. */
nf_status nf_trainer_run(nf_trainer *trainer, nf_train_report *report);

/* Steps done so far. */
size_t nf_trainer_iterations(const nf_trainer *trainer);

/* Saves the whole training state to path, atomically, as a safetensors file
   (scalars as metadata strings, doubles and 64-bit words bit-exact in hex;
   tensors "theta", "adam.m", "adam.v", "order" and, once there is one,
   "best_theta"). NF_EINVAL on a NULL argument, NF_EIO naming path. */
nf_status nf_trainer_save_state(const nf_trainer *trainer, const char *path);

/* Loads a state saved by nf_trainer_save_state into trainer, whose flow must
   have the same parameter count and context width and whose data sets the
   same sizes and training values (a CRC-32 of them) as the saver's. NF_EIO or
   NF_EFORMAT (unreadable or malformed file), NF_EDIM naming what does not fit
   (parameter count, rows, dim, validation rows, training data, opts.state_tag,
   checked in that order; for the tags, the first space-separated word that
   differs, from each), or the check
   of theta's status; the trainer, flow and optimizer are unchanged on failure.
   The options (iterations, schedule, patience, ...) stay this trainer's. */
nf_status nf_trainer_load_state(nf_trainer *trainer, const char *path);

#ifdef __cplusplus
}
#endif
#endif
