# Documentation: the man pages nflow(1) and nflow(3), installed by make install
# (tests/test_man.sh keeps nflow(1) in step with `nflow --help`).
dist_man_MANS = doc/nflow.1 doc/nflow.3
