/* lib/radial.c — placeholder until written. */
