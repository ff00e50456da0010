# Doxygen's INPUT_FILTER for include/nflow/*.h: the headers keep plain C
# comments, the single source of the API's documentation; this turns them
# into Doxygen's on the fly. The file's opening comment documents the file,
# a comment on a line of its own the declaration after it, a comment after
# code on the same line that code (a member, an enumerator, a function);
# "/* ---- section ---- */" rulers stay plain comments.
1s|^/\* |/** \\file\n |
/^[[:space:]]*\/\* ----/b
s|^\([[:space:]]*\)/\*\([^*]\)|\1/**\2|
s|^\([[:space:]]*[^[:space:]/].*[^[:space:]]\)\([[:space:]]*\)/\*\([^*]\)|\1\2/**<\3|
# "<O>", "<j": text, not HTML tags (outside preprocessor lines).
/^#/!s|<\([A-Za-z]\)|\\<\1|g
