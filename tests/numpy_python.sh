# Sourced by the shell tests: sets $python to the first interpreter that
# imports numpy (a pyenv python3 may shadow Debian's, which has python3-numpy),
# or to the empty string.
python=
for p in python3 /usr/bin/python3; do
  if "$p" -c 'import numpy' 2>/dev/null; then python=$p; break; fi
done
