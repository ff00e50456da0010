/* lib/cnf.c — placeholder until written. */
