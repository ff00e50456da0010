# Documentation: the man pages nflow(1) and nflow(3), installed by make install
# (tests/test_man.sh keeps nflow(1) in step with `nflow --help`).
dist_man_MANS = doc/nflow.1 doc/nflow.3

# make doc: the HTML API reference from the headers' comments, by Doxygen
# (doc/api/html/index.html in the build tree). Not part of make all.
EXTRA_DIST += doc/Doxyfile.in doc/doxygen.sed
.PHONY: doc
if HAVE_DOXYGEN
doc: doc/Doxyfile
	$(AM_V_GEN)rm -rf doc/api && $(DOXYGEN) doc/Doxyfile && \
	  echo "make doc: the API reference is $(abs_top_builddir)/doc/api/html/index.html"
else
doc:
	@echo "make doc: doxygen was not found when configure ran; install it (Debian package doxygen) and run configure again" >&2; exit 1
endif
clean-local: clean-doc
clean-doc:
	rm -rf doc/api doc/doxygen.log
.PHONY: clean-doc

# The tutorial: each step is a program of examples/ that tests/test_install.sh
# builds against a staged install and runs.
EXTRA_DIST += doc/tutorial.md doc/compare.png
