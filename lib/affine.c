/* lib/affine.c — placeholder until written. */
