# ODE integrators behind nf_ode and the adjoint drivers (continuous flows).
