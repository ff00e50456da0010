/* lib/dataset.c — placeholder until written. */
