/* lib/permute.c — placeholder until written. */
