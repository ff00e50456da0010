/* lib/flow.c — placeholder until written. */
