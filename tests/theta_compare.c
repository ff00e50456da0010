/* tests/theta_compare.c — compares the parameters of two saved models:
   theta_compare A B TOL exits 0 if they have the same count and every
   |a_i - b_i| <= TOL max(|a_i|, 1), else 1 (naming the worst component);
   2 if a file cannot be loaded. Prints the largest difference in those units. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nflow.h"

int main(int argc, char **argv)
{
  if (argc != 4) {
    fprintf(stderr, "usage: theta_compare A.safetensors B.safetensors TOL\n");
    return 2;
  }
  nf_flow *f[2] = {NULL, NULL};
  for (int k = 0; k < 2; k++)
    if (nf_flow_load(argv[1 + k], NULL, &f[k], NULL)) {
      fprintf(stderr, "theta_compare: %s\n", nf_errmsg());
      nf_flow_free(f[0]);
      return 2;
    }
  size_t n = nf_flow_n_params(f[0]), worst_i = 0;
  double tol = atof(argv[3]), worst = 0;
  int rc = n != nf_flow_n_params(f[1]) || n == 0;
  const double *a = nf_flow_params(f[0]), *b = nf_flow_params(f[1]);
  for (size_t i = 0; !rc && i < n; i++) {
    double e = fabs(a[i] - b[i]) / fmax(fabs(a[i]), 1.0);
    if (!(e <= worst)) worst = e, worst_i = i; /* a NaN is the worst */
  }
  if (!rc) rc = !(worst <= tol);
  printf("params=%zu/%zu largest_difference=%.3g at theta[%zu] (%.17g vs %.17g)\n", n,
         nf_flow_n_params(f[1]), worst, worst_i, n ? a[worst_i] : 0.0, n ? b[worst_i] : 0.0);
  nf_flow_free(f[0]);
  nf_flow_free(f[1]);
  return rc;
}
