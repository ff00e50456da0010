/* lib/csv.c — placeholder until written. */
