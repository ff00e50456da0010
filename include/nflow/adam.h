/* nflow/adam.h */
#ifndef NFLOW_ADAM_H
#define NFLOW_ADAM_H
#endif
