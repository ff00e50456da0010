/* nflow/version.h — the version of the headers, and of the library linked. */
#ifndef NFLOW_VERSION_H
#define NFLOW_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#define NFLOW_VERSION_MAJOR 1
#define NFLOW_VERSION_MINOR 0
#define NFLOW_VERSION_PATCH 0
#define NFLOW_VERSION_STRING "1.0.0"

/* The version of the library linked, "MAJOR.MINOR.PATCH" (compare with
   NFLOW_VERSION_STRING to detect a header/library mismatch). */
const char *nf_version(void);

#ifdef __cplusplus
}
#endif
#endif
