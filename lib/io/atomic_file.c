/* lib/io/atomic_file.c — replace a file atomically: write a temporary in the same
   folder, fsync it, rename it over the target, fsync the folder. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "io/io_internal.h"

/* Records "path: what: strerror(err)" and returns NF_EIO. */
static nf_status io_fail(const char *path, const char *what, int err)
{
  return nf_fail(NF_EIO, "%s: %s: %s", path, what, strerror(err));
}

/* Syncs the folder holding path (so the rename survives a crash); 0 or an errno. */
static int sync_folder(const char *path)
{
  const char *slash = strrchr(path, '/');
  size_t len = slash ? (size_t)(slash - path) : 0;
  char *dir = malloc(len + 2);
  if (!dir) return ENOMEM;
  if (!slash)
    strcpy(dir, ".");
  else if (len == 0)
    strcpy(dir, "/");
  else
    memcpy(dir, path, len), dir[len] = '\0';
  int fd = open(dir, O_RDONLY);
  free(dir);
  if (fd < 0) return errno;
  int err = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  return err == EINVAL ? 0 : err; /* some file systems cannot sync a folder */
}

/* Gives the temporary fd the permissions of the file it replaces, or 0666 less
   the usual umask 022 for a new file (mkstemp creates 0600). */
static void set_mode(int fd, const char *path)
{
  struct stat st;
  mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644;
  (void)fchmod(fd, mode);
}

/* Runs the callback on the open temporary f, then flushes, syncs and closes it;
   the status, with its message (the callback's or NF_EIO). f is closed either way. */
static nf_status fill_temporary(const char *path, FILE *f, nf_status (*write)(FILE *f, void *user),
                                void *user)
{
  errno = 0;
  nf_status st = write(f, user);
  int err = errno ? errno : EIO;
  if (st == NF_OK && ferror(f)) st = io_fail(path, "write failed", err);
  if (st == NF_OK && fflush(f) != 0) st = io_fail(path, "write failed", errno);
  if (st == NF_OK && fsync(fileno(f)) != 0) st = io_fail(path, "fsync failed", errno);
  if (fclose(f) != 0 && st == NF_OK) st = io_fail(path, "close failed", errno);
  return st;
}

nf_status nf_atomic_write(const char *path, nf_status (*write)(FILE *f, void *user), void *user)
{
  if (!path || !write) return nf_fail(NF_EINVAL, "nf_atomic_write: NULL argument");
  size_t len = strlen(path);
  char *tmp = malloc(len + sizeof ".tmpXXXXXX");
  if (!tmp) return nf_fail(NF_ENOMEM, "%s: out of memory", path);
  memcpy(tmp, path, len);
  memcpy(tmp + len, ".tmpXXXXXX", sizeof ".tmpXXXXXX");
  int fd = mkstemp(tmp);
  if (fd < 0) {
    nf_status st = io_fail(path, "cannot create a temporary file", errno);
    free(tmp);
    return st;
  }
  set_mode(fd, path);
  FILE *f = fdopen(fd, "wb");
  nf_status st = f ? fill_temporary(path, f, write, user)
                   : io_fail(path, "cannot open a temporary file", errno);
  if (!f) close(fd);
  if (st == NF_OK && rename(tmp, path) != 0)
    st = io_fail(path, "cannot rename the temporary over it", errno);
  if (st != NF_OK) remove(tmp);
  free(tmp);
  if (st != NF_OK) return st;
  int err = sync_folder(path);
  return err ? io_fail(path, "written, but syncing its folder failed", err) : NF_OK;
}
