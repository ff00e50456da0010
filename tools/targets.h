/* tools/targets.h — the nflow tool's targets for reverse-KL training
   (--target, --target-lib) and what it prints about a flow against one. */
#ifndef NFLOW_TOOL_TARGETS_H
#define NFLOW_TOOL_TARGETS_H

#include <stddef.h>
#include "nflow.h"

#define PHI4_DEFAULT_LATTICE 8 /* --lattice's default */

/* The command line's description of a target. */
typedef struct target_spec {
  const char *name; /* --target doublewell|mixture|phi4, or NULL */
  const char *lib;  /* --target-lib FILE.so:SYMBOL, or NULL */
  size_t dim;       /* --dim (user targets) */
  size_t lattice;   /* --lattice L (phi4; 0: PHI4_DEFAULT_LATTICE) */
  double mass2, lambda; /* --mass2, --lambda (phi4; NaN: defaults -4 and 8) */
} target_spec;

/* A target and the shared library it came from (NULL for a built-in). */
typedef struct tool_target {
  nf_target *target;
  void *handle;
  char label[64]; /* its name for the output: doublewell, phi4, user:SYMBOL */
} tool_target;

/* Builds the target the spec names; 0, or a message on stderr and 2. */
int tool_target_open(const target_spec *spec, tool_target *out);
void tool_target_close(tool_target *t);

/* Draws n samples from flow (rng) and prints key=value lines: ess, logz,
   logz_err (and logz_exact where the target's normaliser is known), the
   raw samples' mode_frac for the double well (x1 > 0), phi4's reweighted
   abs_m and m2 with errors, else the reweighted mean of each coordinate up
   to 4; 0, or a message on stderr and 1. */
int tool_target_report(nf_flow *flow, const tool_target *t, nf_rng *rng, size_t n);

#endif
