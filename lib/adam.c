/* lib/adam.c — placeholder until written. */
