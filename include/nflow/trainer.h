/* nflow/trainer.h */
#ifndef NFLOW_TRAINER_H
#define NFLOW_TRAINER_H
#endif
