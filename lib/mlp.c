/* lib/mlp.c — placeholder until written. */
