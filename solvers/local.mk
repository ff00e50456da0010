# ODE integrators behind nf_ode (include/nflow/ode.h) and the adjoint drivers.
nflowinclude_HEADERS += include/nflow/ode.h
noinst_HEADERS += solvers/solver.h
libnflow_la_SOURCES += solvers/ode.c solvers/explicit_rk.c solvers/cvodes.c solvers/backsolve.c
