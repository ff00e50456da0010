/* lib/core/normal.h — the standard normal CDF and its inverse in log space
   (internal: the Gaussianization layer and its tests). */
#ifndef NFLOW_NORMAL_H
#define NFLOW_NORMAL_H

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* log Phi(z) for every finite z, to a few ulp relative (Phi(-38) underflows
   a double; its log does not). */
double nf_log_ndtr(double z);

/* log(Phi(z) / phi(z)), the log Mills ratio of -z, for every finite z:
   without cancellation in the lower tail (no z^2 / 2 is added there). */
double nf_log_mills(double z);

/* z = Phi^-1(exp(logp)) for logp <= 0 (logp = 0 gives +Inf, NaN gives NaN):
   Wichura's AS241 (1988) from p or from r = sqrt(-logp) for logp >= -729,
   beyond it an asymptotic start, both polished by Newton steps on log Phi.
   Accurate to about 1e-15 relative for logp <= log(1/2); above it z is as
   ill-conditioned as log(1 - p), so callers knowing log(1 - p) pass the
   smaller of the two and negate. */
double nf_ndtri_log(double logp);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
