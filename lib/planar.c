/* lib/planar.c — placeholder until written. */
