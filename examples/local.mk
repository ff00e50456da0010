noinst_PROGRAMS += examples/density examples/hamiltonian
examples_density_SOURCES = examples/density.c
examples_density_LDADD = libnflow.la -lm
examples_hamiltonian_SOURCES = examples/hamiltonian.c
examples_hamiltonian_LDADD = libnflow.la -lm
