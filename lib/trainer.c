/* lib/trainer.c — placeholder until written. */
