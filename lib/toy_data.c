/* lib/toy_data.c — placeholder until written. */
