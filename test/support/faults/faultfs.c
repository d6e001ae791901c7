/*
 * faultfs: an LD_PRELOAD shim that injects storage faults below a process, for the durability
 * tests. It only touches files whose exact paths are listed in FAULTFS_PATHS (colon separated).
 *
 *   FAULTFS_BUFFER=1   writes to those files are held in memory until fsync/fdatasync on the same
 *                      descriptor, then written and synced: what was never synced vanishes when the
 *                      process is killed, as it would in a power cut (without the shim the page
 *                      cache keeps it across kill -9, which hides a missing fdatasync). close()
 *                      discards what is still held.
 *   FAULTFS_CTL=DIR    while DIR/fail-sync exists, fsync/fdatasync on those files fail with EIO.
 *                      The held writes are then discarded, or with FAULTFS_FAILED=keep written to
 *                      the file unsynced: Linux marks the failed pages clean and reports the error
 *                      once (a second fsync succeeds), and what the file shows afterwards depends
 *                      on whether the pages stay cached (keep: a kill -9 without reboot) or not.
 *   FAULTFS_LOG=FILE   one line per fsync/fdatasync on those files: "sync ok" or "sync EIO", so a
 *                      test can check the shim was on the path.
 *
 * Node must use the thread pool, not io_uring, for file I/O (UV_USE_IO_URING=0) so that its calls
 * go through these libc symbols. Built by the test with `cc -shared -fPIC`.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 4096

struct held {
  int tracked;
  char *data; /* appended bytes (write() at the current offset) */
  size_t len, cap;
};

static struct held fds[MAX_FD];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

#define REAL(name) static __typeof__(name) *real_##name; if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

static int listed(const char *path) {
  const char *list = getenv("FAULTFS_PATHS");
  if (!list || !path) return 0;
  size_t n = strlen(path);
  for (const char *p = list; *p;) {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n && strncmp(p, path, n) == 0) return 1;
    if (!end) break;
    p = end + 1;
  }
  return 0;
}

static int buffering(void) {
  const char *b = getenv("FAULTFS_BUFFER");
  return b && *b == '1';
}

static int failing(void) {
  const char *ctl = getenv("FAULTFS_CTL");
  if (!ctl) return 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/fail-sync", ctl);
  return access(path, F_OK) == 0;
}

static void note(const char *what) {
  const char *log = getenv("FAULTFS_LOG");
  if (!log) return;
  REAL(open);
  REAL(write);
  REAL(close);
  int fd = real_open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  (void)!real_write(fd, what, strlen(what));
  real_close(fd);
}

static void track(int fd, const char *path) {
  if (fd < 0 || fd >= MAX_FD) return;
  pthread_mutex_lock(&lock);
  free(fds[fd].data);
  fds[fd] = (struct held){.tracked = listed(path)};
  pthread_mutex_unlock(&lock);
}

static int held_fd(int fd) { return fd >= 0 && fd < MAX_FD && fds[fd].tracked && buffering(); }

/* The mode argument exists only with O_CREAT/O_TMPFILE; reading it otherwise is harmless here. */
#define MODE_ARG(flags) \
  va_list ap;           \
  va_start(ap, flags);  \
  mode_t mode = va_arg(ap, mode_t); \
  va_end(ap)

#define WRAP_OPEN(name)                            \
  int name(const char *path, int flags, ...) {     \
    REAL(name);                                    \
    MODE_ARG(flags);                               \
    int fd = real_##name(path, flags, mode);       \
    track(fd, path);                               \
    return fd;                                     \
  }

#define WRAP_OPENAT(name)                                    \
  int name(int dirfd, const char *path, int flags, ...) {    \
    REAL(name);                                              \
    MODE_ARG(flags);                                         \
    int fd = real_##name(dirfd, path, flags, mode);          \
    track(fd, path);                                         \
    return fd;                                               \
  }

WRAP_OPEN(open)
WRAP_OPEN(open64)
WRAP_OPENAT(openat)
WRAP_OPENAT(openat64)

int close(int fd) {
  REAL(close);
  if (fd >= 0 && fd < MAX_FD) track(fd, NULL);
  return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t n) {
  REAL(write);
  pthread_mutex_lock(&lock);
  if (!held_fd(fd)) {
    pthread_mutex_unlock(&lock);
    return real_write(fd, buf, n);
  }
  struct held *h = &fds[fd];
  if (h->len + n > h->cap) {
    size_t cap = (h->len + n) * 2;
    char *grown = realloc(h->data, cap);
    if (!grown) {
      pthread_mutex_unlock(&lock);
      errno = ENOMEM;
      return -1;
    }
    h->data = grown;
    h->cap = cap;
  }
  memcpy(h->data + h->len, buf, n);
  h->len += n;
  pthread_mutex_unlock(&lock);
  return (ssize_t)n;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  REAL(writev);
  if (!held_fd(fd)) return real_writev(fd, iov, cnt);
  ssize_t total = 0;
  for (int i = 0; i < cnt; i++) total += write(fd, iov[i].iov_base, iov[i].iov_len);
  return total;
}

/* Write out what is held (the caller syncs); -1 with errno on failure. */
static int flush_held(int fd) {
  REAL(write);
  struct held *h = &fds[fd];
  size_t at = 0;
  while (at < h->len) {
    ssize_t k = real_write(fd, h->data + at, h->len - at);
    if (k < 0) return -1;
    at += (size_t)k;
  }
  h->len = 0;
  return 0;
}

static int sync_with_faults(int fd, int (*real)(int)) {
  pthread_mutex_lock(&lock);
  int tracked = fd >= 0 && fd < MAX_FD && fds[fd].tracked;
  if (tracked && failing()) {
    const char *keep = getenv("FAULTFS_FAILED");
    if (keep && strcmp(keep, "keep") == 0) (void)flush_held(fd);
    fds[fd].len = 0;
    pthread_mutex_unlock(&lock);
    note("sync EIO\n");
    errno = EIO;
    return -1;
  }
  int rc = tracked && buffering() ? flush_held(fd) : 0;
  pthread_mutex_unlock(&lock);
  if (rc == 0) rc = real(fd);
  if (tracked) note(rc == 0 ? "sync ok\n" : "sync failed\n");
  return rc;
}

int fsync(int fd) {
  REAL(fsync);
  return sync_with_faults(fd, real_fsync);
}

int fdatasync(int fd) {
  REAL(fdatasync);
  return sync_with_faults(fd, real_fdatasync);
}

/* A truncation replaces whatever is held (the caller cuts the file back to a known length). */
static void drop_held(int fd) {
  pthread_mutex_lock(&lock);
  if (fd >= 0 && fd < MAX_FD) fds[fd].len = 0;
  pthread_mutex_unlock(&lock);
}

int ftruncate(int fd, off_t len) {
  REAL(ftruncate);
  drop_held(fd);
  return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off64_t len) {
  REAL(ftruncate64);
  drop_held(fd);
  return real_ftruncate64(fd, len);
}
