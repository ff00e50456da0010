/* lib/core/normal.c — log Phi and Phi^-1 from a log probability, accurate
   far into the tails (|z| of 30 and beyond, where Phi underflows). */
#include <math.h>

#include "normal.h"

static const double HALF_LOG_2PI = 0.91893853320467274178;
static const double SQRT1_2 = 0.70710678118654752440;
static const double LN2 = 0.69314718055994530942;

/* Mills ratio R(t) = Q(t) / phi(t) for t >= 20 by its continued fraction
   1/(t + 1/(t + 2/(t + 3/(t + ...)))) (Abramowitz & Stegun 26.2.14),
   evaluated backwards from depth 60: converged to rounding for t >= 20. */
static double mills_ratio_tail(double t)
{
  double f = t;
  for (int k = 60; k >= 1; k--) f = t + k / f;
  return 1.0 / f;
}

/* log Phi(z): log1p(-Q(-z)) above 0, log(erfc(-z/sqrt 2)/2) down to -20,
   then log phi(z) + log R(-z) (no underflow at any finite z). */
double nf_log_ndtr(double z)
{
  if (z > 0) return log1p(-0.5 * erfc(z * SQRT1_2));
  if (z >= -20) return log(0.5 * erfc(-z * SQRT1_2));
  return -0.5 * z * z - HALF_LOG_2PI + log(mills_ratio_tail(-z));
}

/* log(Phi(z) / phi(z)) without the cancellation of log Phi(z) + z^2/2 in
   the far lower tail (there it is log R(-z) straight from the fraction). */
double nf_log_mills(double z)
{
  if (z < -20) return log(mills_ratio_tail(-z));
  return nf_log_ndtr(z) + 0.5 * z * z + HALF_LOG_2PI;
}

/* Horner evaluation of c[0] + c[1] r + ... + c[7] r^7. */
static double poly7(const double *c, double r)
{
  double v = c[7];
  for (int k = 6; k >= 0; k--) v = v * r + c[k];
  return v;
}

/* Wichura's AS241 (PPND16) for the lower half, logp <= log(1/2): the central
   rational function of q = p - 1/2 for p >= 0.075, else the two tail
   functions of r = sqrt(-log p) (taken from logp directly, no exp/log round
   trip). Valid for r <= 27 (logp >= -729); about 1e-16 relative. q = p - 1/2
   comes from expm1, so z near 0 keeps the accuracy logp allows. */
static double as241_lower(double logp)
{
  static const double a[8] = {3.3871328727963666080e0, 1.3314166789178437745e+2,
                              1.9715909503065514427e+3, 1.3731693765509461125e+4,
                              4.5921953931549871457e+4, 6.7265770927008700853e+4,
                              3.3430575583588128105e+4, 2.5090809287301226727e+3};
  static const double b[8] = {1.0, 4.2313330701600911252e+1, 6.8718700749205790830e+2,
                              5.3941960214247511077e+3, 2.1213794301586595867e+4,
                              3.9307895800092710610e+4, 2.8729085735721942674e+4,
                              5.2264952788528545610e+3};
  static const double c[8] = {1.42343711074968357734e0, 4.63033784615654529590e0,
                              5.76949722146069140550e0, 3.64784832476320460504e0,
                              1.27045825245236838258e0, 2.41780725177450611770e-1,
                              2.27238449892691845833e-2, 7.74545014278341407640e-4};
  static const double d[8] = {1.0, 2.05319162663775882187e0, 1.67638483018380384940e0,
                              6.89767334985100004550e-1, 1.48103976427480074590e-1,
                              1.51986665636164571966e-2, 5.47593808499534494600e-4,
                              1.05075007164441684324e-9};
  static const double e[8] = {6.65790464350110377720e0, 5.46378491116411436990e0,
                              1.78482653991729133580e0, 2.96560571828504891230e-1,
                              2.65321895265761230930e-2, 1.24266094738807843860e-3,
                              2.71155556874348757815e-5, 2.01033439929228813265e-7};
  static const double f[8] = {1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1,
                              1.48753612908506148525e-2, 7.86869131145613259100e-4,
                              1.84631831751005468180e-5, 1.42151175831644588870e-7,
                              2.04426310338993978564e-15};
  double q = 0.5 * expm1(logp + LN2); /* p - 1/2 without cancelling */
  if (q >= -0.425) {
    double r = 0.180625 - q * q;
    return q * poly7(a, r) / poly7(b, r);
  }
  double r = sqrt(-logp);
  if (r <= 5.0) return -poly7(c, r - 1.6) / poly7(d, r - 1.6);
  return -poly7(e, r - 5.0) / poly7(f, r - 5.0);
}

/* Start beyond AS241 (logp < -729): Phi(z) ~ phi(z)/|z| gives
   t^2/2 + log t + log sqrt(2 pi) = -logp, solved by fixed point in t = -z. */
static double asymptotic_lower(double logp)
{
  double t = sqrt(-2.0 * logp);
  for (int k = 0; k < 4; k++) t = sqrt(2.0 * (-logp - log(t) - HALF_LOG_2PI));
  return -t;
}

/* One Newton step on g(z) = log Phi(z) - logp, g'(z) = phi(z)/Phi(z). */
static double newton_log_ndtr(double z, double logp)
{
  return z - (nf_log_ndtr(z) - logp) * exp(nf_log_mills(z));
}

double nf_ndtri_log(double logp)
{
  if (isnan(logp) || logp > 0) return NAN;
  if (logp == 0) return INFINITY;
  if (logp > -LN2) { /* upper half: through log(1 - p), as well as it is known */
    return -nf_ndtri_log(log(-expm1(logp)));
  }
  if (logp == -INFINITY) return -INFINITY;
  if (logp >= -2.0) return as241_lower(logp);
  if (logp >= -729.0) return newton_log_ndtr(as241_lower(logp), logp);
  double z = asymptotic_lower(logp);
  for (int k = 0; k < 4; k++) z = newton_log_ndtr(z, logp);
  return z;
}
