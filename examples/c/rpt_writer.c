/*
 * rpt_writer: the simulated engine in C. Creates (or re-opens) a layout v1 segment exactly like
 * `deno task writer`, then publishes N entries with the same deterministic payload.
 *
 *   rpt_writer --name /x --count N [--capacity C] [--rate R]
 *
 * --capacity (default 1024) applies when creating; an existing segment of another capacity is an
 * error when --capacity is given. --rate 0 or absent: as fast as possible. Continues from the
 * segment's write_ptr. Claims the writer role like the Deno writer (its lock, then writer_owner)
 * and releases it on exit; refreshes writer_heartbeat_ns and wakes futex waiters like it.
 *
 * Exit status: 0 ok, 2 bad arguments, 3 invalid segment, 6 another writer is alive, 7 system
 * error. Build: cc -O2 -std=c11 -Wall -Wextra -Werror -pthread -I../../include rpt_writer.c -lrt
 */
#define _POSIX_C_SOURCE 200809L
#if defined(__linux__)
#define _DEFAULT_SOURCE /* syscall() for FUTEX_WAKE */
#endif

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "rpt_shm.h"

enum { EXIT_USAGE = 2, EXIT_INVALID = 3, EXIT_OWNERSHIP = 6, EXIT_SYSTEM = 7 };

/* Entries published between checks of the stop flag, heartbeat and futex waiters. */
#define CHUNK 4096u

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) { stop_signal = sig; }

static void die(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("rpt_writer: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(status);
}

static const char USAGE[] =
    "Usage: rpt_writer --name /x --count N [--capacity C] [--rate R]\n"
    "  --name NAME     segment name (default " RPT_DEFAULT_NAME ")\n"
    "  --count N       entries to publish (required)\n"
    "  --capacity C    slots when creating, a power of two (default 1024)\n"
    "  --rate R        entries per second; 0 or absent = as fast as possible\n";

static uint64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Parses a decimal integer from min to max, or exits with a usage error naming the flag. */
static uint64_t parse_uint(const char *flag, const char *text, uint64_t min, uint64_t max) {
  uint64_t v = 0;
  const char *p = text;
  if (*p == '\0') goto bad;
  for (; *p; p++) {
    if (*p < '0' || *p > '9') goto bad;
    if (v > (UINT64_MAX - 9) / 10) goto bad;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  if (v < min || v > max) goto bad;
  return v;
bad:
  die(EXIT_USAGE, "--%s must be an integer from %llu to %llu: current value is \"%s\"", flag,
      (unsigned long long)min, (unsigned long long)max, text);
  return 0;
}

/* Same rule as segment.ts validateName: a slash then 1 to 30 of A-Z a-z 0-9 . _ - */
static int valid_name(const char *name) {
  size_t n = strlen(name);
  if (n < 2 || n > 31 || name[0] != '/') return 0;
  for (size_t i = 1; i < n; i++) {
    char c = name[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-')) {
      return 0;
    }
  }
  return 1;
}

/* ---- Ownership: a role is held by its open-file-description lock (rpt_role_lock, Linux); the
 * owner word, pid (low u32) | start-time token (high u32), records who holds it, as ownership.ts */

/* Reads /proc/PID/stat: the start-time token (low 32 bits of field 22, never 0) or 0 where it
 * cannot be read; *dying is set when the process is a zombie or has begun to exit (PF_EXITING). */
static uint32_t process_stat(pid_t pid, int *dying) {
  char path[64], buf[1024];
  *dying = 0;
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (p == NULL || p[1] == '\0') return 0;
  p += 2;
  char state = p[0];
  unsigned long flags = 0;
  for (int field = 0; field < 19; field++) { /* fields[19] after ") " is field 22 */
    p = strchr(p, ' ');
    if (p == NULL) return 0;
    p++;
    if (field == 5) flags = strtoul(p, NULL, 10); /* fields[6]: flags */
  }
  *dying = state == 'Z' || state == 'X' || state == 'x' || (flags & 0x4u) != 0; /* PF_EXITING */
  char *end;
  unsigned long long start = strtoull(p, &end, 10);
  if (end == p) return 0;
  uint32_t token = (uint32_t)(start % 4294967296ull);
  return token ? token : 1;
}

static uint32_t process_token(pid_t pid) {
  int dying;
  return process_stat(pid, &dying);
}

/* Whether the owner word names a running process: it exists, is neither a zombie nor exiting,
 * and its start time matches the token. */
static int owner_alive(uint64_t word) {
  pid_t pid = (pid_t)(word & 0xffffffffu);
  uint32_t token = (uint32_t)(word >> 32);
  if (pid <= 0) return 0;
  if (kill(pid, 0) != 0 && errno != EPERM) return 0;
  int dying = 0;
  uint32_t now = process_stat(pid, &dying);
  if (dying) return 0;
  return token == 0 || now == 0 || now == token;
}

/* Claims a role: takes its lock on the segment descriptor fd (held until fd is closed, or the
 * process dies), then stores this process in the owner word. Returns the pid of a dead holder
 * whose word was replaced (0 if none), or -1 with *holder set when another process holds the
 * role: refused once its owner word names a running process (seen twice 1 ms apart; a holder
 * killed a moment ago still holds its lock until the kernel closes its descriptors), at the latest
 * after a second. Without open-file-description locks (not Linux): the owner word alone. */
static long claim_role(int fd, uint32_t lock_offset, uint64_t *word, uint64_t mine,
                       pid_t *holder) {
#if defined(__linux__)
  int seen_alive = 0;
  for (int waited_ms = 0;; waited_ms++) {
    int r = rpt_role_lock(fd, lock_offset);
    if (r < 0) return -2;
    if (r == 0) {
      uint64_t previous = __atomic_exchange_n(word, mine, __ATOMIC_ACQ_REL);
      return previous == 0 || previous == mine ? 0 : (long)(previous & 0xffffffffu);
    }
    uint64_t current = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    seen_alive = current != 0 && owner_alive(current) ? seen_alive + 1 : 0;
    if (seen_alive >= 2 || waited_ms >= 1000) {
      *holder = (pid_t)(current & 0xffffffffu);
      return -1;
    }
    nanosleep(&(struct timespec){0, 1000000L}, NULL);
  }
#else
  (void)fd;
  (void)lock_offset;
  for (;;) {
    uint64_t current = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    if (current == mine) return 0;
    if (current != 0 && owner_alive(current)) {
      *holder = (pid_t)(current & 0xffffffffu);
      return -1;
    }
    if (__atomic_compare_exchange_n(word, &current, mine, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      return (long)(current & 0xffffffffu);
    }
  }
#endif
}

static void release_owner(uint64_t *word, uint64_t mine) {
  uint64_t expected = mine;
  __atomic_compare_exchange_n(word, &expected, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* ---- Segment ---------------------------------------------------------------------------------- */

typedef struct segment {
  rpt_header *h;
  uint64_t size;
  int fd;
  int created;
} segment;

static void report_invalid(const char *name, const rpt_header *h, uint64_t size, rpt_check c,
                           int bad_reader) {
  unsigned long long v = 0;
  switch (c) {
  case RPT_BAD_MAGIC: v = h->magic; break;
  case RPT_BAD_VERSION: v = h->version; break;
  case RPT_BAD_ENTRY_SIZE: v = h->entry_size; break;
  case RPT_BAD_CAPACITY: v = h->capacity; break;
  case RPT_BAD_ENTRIES_OFFSET: v = h->entries_offset; break;
  case RPT_BAD_EPOCH: v = h->epoch; break;
  case RPT_BAD_WRITE_PTR: v = h->write_ptr; break;
  case RPT_BAD_READ_PTR: v = h->read_ptrs[bad_reader]; break;
  default: v = size; break;
  }
  die(EXIT_INVALID, "cannot use segment %s as %s: current value is %llu (0x%llx)", name,
      rpt_check_message(c), v, v);
}

/* Creates the segment like segment.ts Segment.create, or returns -1 with errno EEXIST. */
static int try_create(const char *name, uint32_t capacity, segment *seg) {
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return -1;
    die(EXIT_SYSTEM, "cannot create segment %s: shm_open: %s", name, strerror(errno));
  }
  uint64_t size = rpt_segment_size(capacity);
  const char *what = "fchmod";
  void *p = MAP_FAILED;
  if (fchmod(fd, 0600) != 0) goto fail;
  what = "ftruncate";
  if (ftruncate(fd, (off_t)size) != 0) goto fail;
  what = "mmap";
  p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) goto fail;
  rpt_header_init((rpt_header *)p, capacity, now_ns(CLOCK_REALTIME));
  seg->h = (rpt_header *)p;
  seg->size = size;
  seg->fd = fd;
  seg->created = 1;
  return 0;
fail: {
  int err = errno;
  close(fd);
  shm_unlink(name);
  die(EXIT_SYSTEM, "cannot create segment %s: %s: %s", name, what, strerror(err));
  return -1;
}
}

/* Opens an existing segment: 0 ok, 1 gone (re-create), 2 not initialised yet. Exits if invalid. */
static int try_open(const char *name, segment *seg) {
  int fd = shm_open(name, O_RDWR, 0600);
  if (fd < 0) {
    if (errno == ENOENT) return 1;
    die(EXIT_SYSTEM, "cannot open segment %s: shm_open: %s", name, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) die(EXIT_SYSTEM, "cannot open segment %s: fstat: %s", name, strerror(errno));
  uint64_t size = (uint64_t)st.st_size;
  if (size == 0) {
    close(fd);
    return 2;
  }
  uint64_t largest = rpt_segment_size(RPT_MAX_CAPACITY) + (1u << 20);
  if (size < RPT_HEADER_SIZE || size > largest) {
    die(EXIT_INVALID, "cannot use segment %s as its size must be %u to %llu bytes: current value is %llu",
        name, RPT_HEADER_SIZE, (unsigned long long)largest, (unsigned long long)size);
  }
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die(EXIT_SYSTEM, "cannot map segment %s: mmap: %s", name, strerror(errno));
  rpt_header *h = (rpt_header *)p;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == 0) {
    munmap(p, (size_t)size);
    close(fd);
    return 2;
  }
  int bad_reader = 0;
  rpt_check c = rpt_header_check(h, size, &bad_reader);
  if (c != RPT_OK) report_invalid(name, h, size, c, bad_reader);
  seg->h = h;
  seg->size = size;
  seg->fd = fd;
  seg->created = 0;
  return 0;
}

/* segment.ts Segment.openOrCreate: create, else open, waiting up to 2 s for a creator. */
static void open_or_create(const char *name, uint32_t capacity, segment *seg) {
  uint64_t deadline = now_ns(CLOCK_MONOTONIC) + 2000000000u;
  for (;;) {
    if (try_create(name, capacity, seg) == 0) return;
    int r = try_open(name, seg);
    if (r == 0) return;
    if (r == 2 && now_ns(CLOCK_MONOTONIC) > deadline) {
      die(EXIT_INVALID, "cannot use segment %s as it is not initialised (magic 0 or size 0)", name);
    }
    if (r == 2) nanosleep(&(struct timespec){0, 10000000}, NULL);
  }
}

static void futex_wake_all(rpt_header *h) {
  __atomic_fetch_add(&h->wake_seq, 1, __ATOMIC_SEQ_CST);
#if defined(__linux__)
  syscall(SYS_futex, &h->wake_seq, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
#endif
}

int main(int argc, char **argv) {
  const char *name = RPT_DEFAULT_NAME;
  uint64_t count = 0, rate = 0, capacity = RPT_DEFAULT_CAPACITY;
  int have_count = 0, capacity_given = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(USAGE, stdout);
      return 0;
    }
    const char *flag = NULL, *value = NULL;
    static const char *const flags[] = {"name", "count", "capacity", "rate"};
    for (size_t f = 0; f < sizeof flags / sizeof *flags; f++) {
      size_t n = strlen(flags[f]);
      if (strncmp(a, "--", 2) == 0 && strncmp(a + 2, flags[f], n) == 0) {
        if (a[2 + n] == '\0') {
          if (i + 1 >= argc) die(EXIT_USAGE, "--%s needs a value", flags[f]);
          flag = flags[f];
          value = argv[++i];
        } else if (a[2 + n] == '=') {
          flag = flags[f];
          value = a + 3 + n;
        }
        if (flag) break;
      }
    }
    if (flag == NULL) die(EXIT_USAGE, "unknown argument \"%s\" (see --help)", a);
    if (strcmp(flag, "name") == 0) {
      name = value;
    } else if (strcmp(flag, "count") == 0) {
      count = parse_uint("count", value, 0, RPT_MAX_INDEX);
      have_count = 1;
    } else if (strcmp(flag, "capacity") == 0) {
      capacity = parse_uint("capacity", value, 1, RPT_MAX_CAPACITY);
      if (!rpt_valid_capacity(capacity)) {
        die(EXIT_USAGE, "--capacity must be a power of two from 1 to %u: current value is %s",
            RPT_MAX_CAPACITY, value);
      }
      capacity_given = 1;
    } else {
      rate = parse_uint("rate", value, 0, 1000000000u);
    }
  }
  if (!have_count) die(EXIT_USAGE, "--count N is required (see --help)");
  if (!valid_name(name)) {
    die(EXIT_USAGE,
        "segment name must be a slash then 1 to 30 characters of A-Z a-z 0-9 . _ -: current "
        "value is \"%s\"",
        name);
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  segment seg;
  open_or_create(name, (uint32_t)capacity, &seg);
  rpt_header *h = seg.h;
  if (!seg.created && capacity_given && h->capacity != capacity) {
    die(EXIT_INVALID, "cannot use segment %s as its capacity is %u but --capacity %llu was given",
        name, h->capacity, (unsigned long long)capacity);
  }
  uint64_t mine = ((uint64_t)process_token(getpid()) << 32) | (uint32_t)getpid();
  pid_t holder = 0;
  long reclaimed = claim_role(seg.fd, RPT_WRITER_LOCK_OFFSET, &h->writer_owner, mine, &holder);
  if (reclaimed == -2) {
    die(EXIT_SYSTEM, "cannot lock the writer role of segment %s: fcntl: %s", name, strerror(errno));
  }
  if (reclaimed < 0) {
    die(EXIT_OWNERSHIP, "cannot start writer as segment %s is held by live writer pid %ld", name,
        (long)holder);
  }

  uint64_t start = rpt_load(&h->write_ptr);
  if (start + count > RPT_MAX_INDEX) {
    release_owner(&h->writer_owner, mine);
    die(EXIT_USAGE, "cannot write %llu entries as write_ptr %llu would pass 2^52-1",
        (unsigned long long)count, (unsigned long long)start);
  }
  uint64_t now_rt = now_ns(CLOCK_REALTIME);
  rpt_store(&h->writer_start_index, start);
  rpt_store(&h->writer_started_ns, now_rt);
  rpt_store(&h->writer_heartbeat_ns, now_rt);
  if (seg.created) {
    fprintf(stderr, "rpt_writer: created %s (capacity %u, epoch %llu)\n", name, h->capacity,
            (unsigned long long)h->epoch);
  } else {
    fprintf(stderr, "rpt_writer: re-opened %s at write_ptr %llu%s\n", name,
            (unsigned long long)start, reclaimed > 0 ? " (took over from a dead writer)" : "");
  }

  rpt_entry *slots = (rpt_entry *)((char *)h + h->entries_offset);
  const uint64_t mask = (uint64_t)h->capacity - 1;
  rpt_entry e;
  memset(&e, 0, sizeof e); /* reserved bytes stay zero */
  uint64_t i = start, written = 0, last_beat = now_rt;
  const uint64_t t0 = now_ns(CLOCK_MONOTONIC);
  while (written < count && stop_signal == 0) {
    uint64_t due;
    if (rate == 0) {
      due = CHUNK;
    } else {
      uint64_t elapsed = now_ns(CLOCK_MONOTONIC) - t0;
      uint64_t target = (uint64_t)((double)elapsed / 1e9 * (double)rate);
      due = target > written ? target - written : 0;
      if (due == 0) {
        /* Sleep until the next entry is due, at most 1 ms (so signals are seen promptly). */
        uint64_t next = (uint64_t)((double)(written + 1) * 1e9 / (double)rate);
        uint64_t wait = next > elapsed ? next - elapsed : 0;
        if (wait > 1000000u) wait = 1000000u;
        if (wait > 0) nanosleep(&(struct timespec){0, (long)wait}, NULL);
        continue;
      }
      if (due > 65536u) due = 65536u;
    }
    if (due > count - written) due = count - written;
    uint64_t ts = 0;
    for (uint64_t end = i + due; i < end; i++) {
      struct timespec now;
      clock_gettime(CLOCK_REALTIME, &now);
      ts = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
      e.timestamp_ns = ts;
      memcpy(e.symbol, rpt_sim_symbol(i), RPT_SYMBOL_LENGTH);
      e.price_e4 = rpt_sim_price(i);
      e.quantity = rpt_sim_quantity(i);
      e.side = rpt_sim_side(i);
      rpt_publish_slot(h, &slots[i & mask], i, &e);
    }
    written += due;
    if (ts - last_beat >= 100000000u) {
      rpt_store(&h->writer_heartbeat_ns, ts);
      last_beat = ts;
    }
    if (__atomic_load_n(&h->waiters, __ATOMIC_SEQ_CST) != 0) futex_wake_all(h);
  }
  rpt_store(&h->writer_heartbeat_ns, now_ns(CLOCK_REALTIME));
  double seconds = (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;
  release_owner(&h->writer_owner, mine);
  munmap(h, (size_t)seg.size);
  close(seg.fd);
  double per_s = seconds > 0 ? (double)written / seconds : 0.0;
  printf("rpt_writer: wrote %llu entries in %.3f s (%.0f entries/s)\n",
         (unsigned long long)written, seconds, per_s);
  if (stop_signal != 0) {
    fprintf(stderr, "rpt_writer: stopped by signal %d after %llu of %llu entries\n",
            (int)stop_signal, (unsigned long long)written, (unsigned long long)count);
  }
  return 0;
}
