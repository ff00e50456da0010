/* lib/linear_lu.c — placeholder until written. */
