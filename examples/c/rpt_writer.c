/*
 * rpt_writer: the simulated engine in C. Creates (or re-opens) a layout v1 segment exactly like
 * `deno task writer`, then publishes N entries with the same deterministic payload: the default
 * schema's engine (layout.ts simulatedEntry), or, on a segment with a schema block (made by
 * `deno task writer --schema`), the simulated values of every field (schema.ts simulatedValue,
 * bytes[N] included).
 *
 *   rpt_writer --name /x --count N [--capacity C] [--entry-size E] [--rate R] [--fill-bytes]
 *
 * --capacity (default 1024) and --entry-size (default 64; a power of two from 64 to 65,536;
 * capacity x entry size at most 2^30 bytes) apply when creating; an existing segment of another
 * capacity or entry size is an error when the flag is given. --fill-bytes: every entry's one
 * field bytes[N] holds N bytes copied from a constant buffer (byte j = (7 + 31j) mod 256), as a
 * caller publishing a record of that size would; a segment created with it gets the schema
 * `data bytes[E - 20]` (the whole payload), an existing one must have one bytes[N] field (else
 * exit 3). --rate 0 or absent: as fast as possible. Continues from the segment's write_ptr. Claims the writer role like the Deno writer (its lock, then writer_owner)
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
    "Usage: rpt_writer --name /x --count N [--capacity C] [--entry-size E] [--rate R]\n"
    "                  [--fill-bytes]\n"
    "  --name NAME     segment name (default " RPT_DEFAULT_NAME ")\n"
    "  --count N       entries to publish (required)\n"
    "  --capacity C    slots when creating, a power of two (default 1024)\n"
    "  --entry-size E  bytes per slot when creating, a power of two from 64 to 65536 (default\n"
    "                  64); capacity x entry size at most 2^30 bytes\n"
    "  --rate R        entries per second; 0 or absent = as fast as possible\n"
    "  --fill-bytes    fill the one bytes[N] field of each entry from a constant N-byte buffer\n"
    "                  (creates the schema data bytes[E-20])\n";

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

/* ---- Segment ---------------------------------------------------------------------------------- */

typedef struct segment {
  rpt_header *h;
  uint64_t size;
  int fd;
  int created;
} segment;

static void report_invalid(const char *name, const rpt_header *h, uint64_t size, rpt_check c,
                           int bad_reader) {
  unsigned long long v = rpt_check_value(h, size, c, bad_reader);
  die(EXIT_INVALID, "cannot use segment %s as %s: current value is %llu (0x%llx)", name,
      rpt_check_message(c), v, v);
}

/* What a created segment gets: its shape and schema block (none: the default schema). */
typedef struct shape {
  uint32_t capacity, entry_size;
  const unsigned char *block;
  size_t block_length;
} shape;

/* Creates the segment like segment.ts Segment.create, or returns -1 with errno EEXIST. */
static int try_create(const char *name, const shape *sh, segment *seg) {
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return -1;
    die(EXIT_SYSTEM, "cannot create segment %s: shm_open: %s", name, strerror(errno));
  }
  uint64_t size = rpt_segment_size_of(sh->capacity, rpt_entries_offset_for(sh->block_length),
                                      sh->entry_size);
  const char *what = "fchmod";
  void *p = MAP_FAILED;
  if (fchmod(fd, 0600) != 0) goto fail;
  what = "ftruncate";
  if (ftruncate(fd, (off_t)size) != 0) goto fail;
  what = "mmap";
  p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) goto fail;
  rpt_segment_init((rpt_header *)p, sh->capacity, sh->entry_size, now_ns(CLOCK_REALTIME),
                   sh->block, sh->block_length);
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
  uint64_t largest = rpt_max_segment_size();
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
static void open_or_create(const char *name, const shape *sh, segment *seg) {
  uint64_t deadline = now_ns(CLOCK_MONOTONIC) + 2000000000u;
  for (;;) {
    if (try_create(name, sh, seg) == 0) return;
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

/* ---- What each entry holds ------------------------------------------------------------------- */

/* How entries are filled: the default schema's engine, the simulated values of the segment's
 * schema (schema.ts simulatedValue), or --fill-bytes (one bytes[N] field, a constant buffer). */
typedef enum mode { MODE_DEFAULT, MODE_SCHEMA, MODE_FILL } mode;

static rpt_schema schema; /* the segment's schema (large: static) */

typedef struct publisher {
  mode mode;
  rpt_header *h;
  char *slots;
  uint64_t mask;
  uint32_t entry_size;
  unsigned char *image;   /* MODE_DEFAULT, MODE_SCHEMA: the entry built, then copied */
  uint32_t image_length;  /* bytes of image published: the fields rounded up to 8 */
  unsigned char *fill;    /* MODE_FILL: N constant bytes, byte j = (7 + 31j) mod 256 */
} publisher;

/* Publishes entry i with timestamp ts. */
static inline void publish(const publisher *pb, uint64_t i, uint64_t ts) {
  rpt_entry *slot = (rpt_entry *)(pb->slots + (i & pb->mask) * pb->entry_size);
  if (pb->mode == MODE_FILL) {
    rpt_claim_slot(slot);
    __atomic_store_n(&slot->timestamp_ns, ts, __ATOMIC_RELAXED);
    rpt_set_bytes(slot, &schema.fields[0], pb->fill, schema.fields[0].max_length);
    rpt_commit_slot(pb->h, slot, i);
    return;
  }
  rpt_entry *e = (rpt_entry *)pb->image;
  e->timestamp_ns = ts;
  if (pb->mode == MODE_DEFAULT) {
    memcpy(e->symbol, rpt_sim_symbol(i), RPT_SYMBOL_LENGTH);
    e->price_e4 = rpt_sim_price(i);
    e->quantity = rpt_sim_quantity(i);
    e->side = rpt_sim_side(i);
  } else {
    for (uint32_t f = 0; f < schema.field_count; f++) {
      rpt_sim_field(&schema.fields[f], f, i, pb->image);
    }
  }
  rpt_publish_image(pb->h, slot, i, pb->image, pb->image_length);
}

/* Sets up pb for the segment at h (its schema read into `schema`). */
static void publisher_init(publisher *pb, rpt_header *h, int fill_bytes) {
  pb->h = h;
  pb->slots = (char *)h + h->entries_offset;
  pb->mask = (uint64_t)h->capacity - 1;
  pb->entry_size = h->entry_size;
  pb->mode = fill_bytes ? MODE_FILL : schema.is_default ? MODE_DEFAULT : MODE_SCHEMA;
  /* The default schema's payload ends by 0x40: the bytes after it stay zero in a larger slot. */
  pb->image_length = pb->mode == MODE_DEFAULT ? RPT_ENTRY_SIZE : (schema.end + 7u) / 8u * 8u;
  pb->image = aligned_alloc(64, h->entry_size);
  pb->fill = malloc(schema.fields[0].max_length + 1u);
  if (pb->image == NULL || pb->fill == NULL) die(EXIT_SYSTEM, "cannot allocate an entry");
  memset(pb->image, 0, h->entry_size); /* reserved and padding bytes stay zero */
  for (uint32_t j = 0; j < schema.fields[0].max_length; j++) pb->fill[j] = (unsigned char)(7 + 31 * j);
}

/* The schema --fill-bytes creates: one field `data bytes[N]` filling an entry of entry_size. */
static size_t fill_schema_block(uint32_t entry_size, unsigned char *block) {
  rpt_schema_begin(&schema);
  rpt_schema_add(&schema, "data", RPT_T_BYTES,
                 entry_size - RPT_PAYLOAD_OFFSET - RPT_BYTES_LENGTH_SIZE, 0);
  rpt_schema_finish(&schema);
  return rpt_schema_encode(&schema, block);
}

/* Reads the segment's schema into `schema` (exit 3 when it is invalid, or when --fill-bytes is
 * given and it is not one bytes[N] field). */
static void read_schema(const char *name, const segment *seg, int fill_bytes) {
  rpt_schema_problem why;
  if (rpt_schema_read(seg->h, seg->size, &schema, &why) != RPT_SCHEMA_OK) {
    char text[256];
    die(EXIT_INVALID, "cannot use segment %s as %s", name,
        rpt_schema_problem_text(&why, text, sizeof text));
  }
  if (fill_bytes && (schema.field_count != 1 || schema.fields[0].type != RPT_T_BYTES)) {
    die(EXIT_INVALID,
        "cannot use segment %s with --fill-bytes as its schema must be one bytes[N] field: "
        "current value is %u fields, the first %s of type code %u",
        name, schema.field_count, schema.fields[0].name, schema.fields[0].type);
  }
}

/* ---- Main ----------------------------------------------------------------------------------- */

typedef struct options {
  const char *name;
  uint64_t count, rate, capacity, entry_size;
  int capacity_given, entry_size_given, fill_bytes;
} options;

static void parse_args(int argc, char **argv, options *o) {
  int have_count = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(USAGE, stdout);
      exit(0);
    }
    if (strcmp(a, "--fill-bytes") == 0) {
      o->fill_bytes = 1;
      continue;
    }
    const char *flag = NULL, *value = NULL;
    static const char *const flags[] = {"name", "count", "capacity", "rate", "entry-size"};
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
      o->name = value;
    } else if (strcmp(flag, "count") == 0) {
      o->count = parse_uint("count", value, 0, RPT_MAX_INDEX);
      have_count = 1;
    } else if (strcmp(flag, "capacity") == 0) {
      o->capacity = parse_uint("capacity", value, 1, RPT_MAX_CAPACITY);
      if (!rpt_valid_capacity(o->capacity)) {
        die(EXIT_USAGE, "--capacity must be a power of two from 1 to %u: current value is %s",
            RPT_MAX_CAPACITY, value);
      }
      o->capacity_given = 1;
    } else if (strcmp(flag, "entry-size") == 0) {
      o->entry_size = parse_uint("entry-size", value, RPT_ENTRY_SIZE, RPT_MAX_ENTRY_SIZE);
      if (!rpt_valid_entry_size(o->entry_size)) {
        die(EXIT_USAGE, "--entry-size must be a power of two from 64 to 65536: current value is %s",
            value);
      }
      o->entry_size_given = 1;
    } else {
      o->rate = parse_uint("rate", value, 0, 1000000000u);
    }
  }
  if (!have_count) die(EXIT_USAGE, "--count N is required (see --help)");
  if (!valid_name(o->name)) {
    die(EXIT_USAGE,
        "segment name must be a slash then 1 to 30 characters of A-Z a-z 0-9 . _ -: current "
        "value is \"%s\"",
        o->name);
  }
  if (o->capacity * o->entry_size > RPT_MAX_RING_BYTES) {
    die(EXIT_USAGE,
        "--capacity x --entry-size must be at most 2^30 bytes (1 GiB): current values are "
        "capacity %llu and entry size %llu (%llu bytes)",
        (unsigned long long)o->capacity, (unsigned long long)o->entry_size,
        (unsigned long long)(o->capacity * o->entry_size));
  }
}

/* Opens or creates the segment, checks it against the options, and reads its schema. */
static void attach(const options *o, segment *seg) {
  unsigned char block[RPT_SCHEMA_FIELDS_OFFSET + RPT_SCHEMA_FIELD_SIZE_V2];
  shape sh = {(uint32_t)o->capacity, (uint32_t)o->entry_size, block, 0};
  if (o->fill_bytes) sh.block_length = fill_schema_block(sh.entry_size, block);
  open_or_create(o->name, &sh, seg);
  rpt_header *h = seg->h;
  if (!seg->created && o->capacity_given && h->capacity != o->capacity) {
    die(EXIT_INVALID, "cannot use segment %s as its capacity is %u but --capacity %llu was given",
        o->name, h->capacity, (unsigned long long)o->capacity);
  }
  if (!seg->created && o->entry_size_given && h->entry_size != o->entry_size) {
    die(EXIT_INVALID,
        "cannot use segment %s as its entry size is %u but --entry-size %llu was given", o->name,
        h->entry_size, (unsigned long long)o->entry_size);
  }
  read_schema(o->name, seg, o->fill_bytes);
}

int main(int argc, char **argv) {
  options o = {RPT_DEFAULT_NAME, 0, 0, RPT_DEFAULT_CAPACITY, RPT_ENTRY_SIZE, 0, 0, 0};
  parse_args(argc, argv, &o);
  const char *name = o.name;
  const uint64_t count = o.count, rate = o.rate;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  segment seg;
  attach(&o, &seg);
  rpt_header *h = seg.h;
  rpt_claim claim;
  switch (rpt_claim_role(seg.fd, h, RPT_ROLE_WRITER, &claim)) {
  case RPT_CLAIM_ERROR:
    die(EXIT_SYSTEM, "cannot lock the writer role of segment %s: fcntl: %s", name, strerror(errno));
    break;
  case RPT_CLAIM_HELD:
    die(EXIT_OWNERSHIP, "cannot start writer as segment %s is held by live writer pid %ld", name,
        (long)claim.holder);
    break;
  case RPT_CLAIM_TAKEN: break;
  }

  uint64_t start = rpt_load(&h->write_ptr);
  if (start + count > RPT_MAX_INDEX) {
    rpt_release_role(h, RPT_ROLE_WRITER, &claim);
    die(EXIT_USAGE, "cannot write %llu entries as write_ptr %llu would pass 2^52-1",
        (unsigned long long)count, (unsigned long long)start);
  }
  uint64_t now_rt = now_ns(CLOCK_REALTIME);
  rpt_store(&h->writer_start_index, start);
  rpt_store(&h->writer_started_ns, now_rt);
  rpt_store(&h->writer_heartbeat_ns, now_rt);
  if (seg.created) {
    char size_text[32] = "";
    if (h->entry_size != RPT_ENTRY_SIZE) {
      snprintf(size_text, sizeof size_text, ", entry size %u", h->entry_size);
    }
    fprintf(stderr, "rpt_writer: created %s (capacity %u%s, epoch %llu)\n", name, h->capacity,
            size_text, (unsigned long long)h->epoch);
  } else {
    fprintf(stderr, "rpt_writer: re-opened %s at write_ptr %llu%s\n", name,
            (unsigned long long)start, claim.previous > 0 ? " (took over from a dead writer)" : "");
  }

  publisher pb;
  publisher_init(&pb, h, o.fill_bytes);
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
      publish(&pb, i, ts);
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
  rpt_release_role(h, RPT_ROLE_WRITER, &claim);
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
