/* nflow/cnf.h */
#ifndef NFLOW_CNF_H
#define NFLOW_CNF_H
#endif
