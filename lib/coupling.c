/* lib/coupling.c — placeholder until written. */
