/*
 * rpt_reader: a reader of layout v1 in C that writes the reporter's CSV (csv.ts) byte for byte,
 * for any entry size (64 to 65,536 bytes, from the header) and any payload schema: it reads the
 * segment's schema block, version 1 or 2 (rpt_schema_read), and prints the header
 * seq,timestamp_ns,<fields>,epoch and every field as csv.ts does; a bytes[N] field prints the
 * base64 of its stored bytes (RFC 4648, standard alphabet, '=' padding, empty for length 0, never
 * quoted). The one difference: floats print with %.17g (NaN, Infinity, -Infinity and -0 spelt as
 * JavaScript does), which is the same value as JavaScript's shortest round-trip text, not always
 * the same digits.
 *
 *   rpt_reader --name /x --id K --out FILE [--count N] [--from-start]
 *
 * Opens an existing segment read-write and validates it, claims reader id K like the Deno
 * reporter (its lock, then reader_owner[K]), and starts at read_ptrs[K] (0 with --from-start). FILE is created or
 * truncated and gets the header row, then one row per entry, written with stdio in batches;
 * read_ptrs[K] is stored after each batch's fwrite + fflush. With --count N it stops after N
 * entries (rows plus lost entries), waiting for the writer when needed; without --count it
 * drains up to the write_ptr seen at start, then exits. Entries overwritten before they were
 * read (lapped) are skipped, added to reader_lost[K] and reported on stderr as
 * "rpt_reader: lost entries A..B (N)". SIGINT/SIGTERM stop it after the current batch. A
 * bytes[N] field whose stored length is above N is a damaged entry: exit 3 naming the entry's
 * seq, the field and the length, without writing any row of that batch or moving read_ptrs[K].
 *
 * Exit status: 0 ok, 2 bad arguments, 3 invalid segment, 4 segment missing or not initialised,
 * 5 output file error, 6 reader id held by a live process, 7 system error.
 * Build: cc -O2 -std=c11 -Wall -Wextra -Werror -pthread -I../../include rpt_reader.c -lrt
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rpt_shm.h"

enum {
  EXIT_USAGE = 2,
  EXIT_INVALID = 3,
  EXIT_MISSING = 4,
  EXIT_OUTPUT = 5,
  EXIT_OWNERSHIP = 6,
  EXIT_SYSTEM = 7
};

/* Most entries per batch (one fwrite + fflush + read_ptr store each), and the most text a batch
 * may take: fewer entries per batch when rows are long (large char and bytes fields). */
#define BATCH 4096u
#define MAX_BATCH_TEXT (8u << 20)


static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

/* Set once the reader id is claimed, so that die() releases it. */
static rpt_header *owner_header = NULL;
static int owner_role = 0;
static rpt_claim owner_claim;
/* The segment's name, for messages about its entries. */
static const char *segment_name = RPT_DEFAULT_NAME;

static void release_owner(void) {
  if (owner_header == NULL) return;
  rpt_release_role(owner_header, owner_role, &owner_claim);
  owner_header = NULL;
}

static void die(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("rpt_reader: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  release_owner();
  exit(status);
}

static const char USAGE[] =
    "Usage: rpt_reader --name /x --id K --out FILE [--count N] [--from-start]\n"
    "  --name NAME     segment name (default " RPT_DEFAULT_NAME ")\n"
    "  --id K          reader id, 0 to 7 (required)\n"
    "  --out FILE      CSV output, created or truncated (required)\n"
    "  --count N       stop after N entries, waiting for the writer if needed\n"
    "                  (default: drain up to the write_ptr seen at start)\n"
    "  --from-start    start at entry 0 instead of read_ptrs[K]\n";

static uint64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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

/* ---- CSV formatting, identical to csv.ts formatRows ------------------------------------------ */

static const char DIGITS2[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                 "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                 "8081828384858687888990919293949596979899";

static inline char *put_u64(char *p, uint64_t v) {
  char tmp[20];
  char *t = tmp + sizeof tmp;
  while (v >= 100) {
    uint64_t q = v / 100;
    unsigned r = (unsigned)(v - q * 100) * 2;
    *--t = DIGITS2[r + 1];
    *--t = DIGITS2[r];
    v = q;
  }
  if (v >= 10) {
    unsigned r = (unsigned)v * 2;
    *--t = DIGITS2[r + 1];
    *--t = DIGITS2[r];
  } else {
    *--t = (char)('0' + v);
  }
  size_t n = (size_t)(tmp + sizeof tmp - t);
  memcpy(p, t, n);
  return p + n;
}

/* price_e4 as units.dddd, with a leading '-' when negative. */
static inline char *put_price(char *p, int64_t price) {
  uint64_t v = (uint64_t)price;
  if (price < 0) {
    *p++ = '-';
    v = 0 - v;
  }
  uint64_t units = v / 10000;
  unsigned frac = (unsigned)(v - units * 10000);
  p = put_u64(p, units);
  *p++ = '.';
  unsigned hi = frac / 100 * 2, lo = frac % 100 * 2;
  p[0] = DIGITS2[hi];
  p[1] = DIGITS2[hi + 1];
  p[2] = DIGITS2[lo];
  p[3] = DIGITS2[lo + 1];
  return p + 4;
}

static inline int needs_quote(unsigned char b) {
  return b == ',' || b == '"';
}

/* CR and LF are written as '?', so that every LF in the file ends a row (as csv.ts does). */
static inline char text_byte(unsigned char b) {
  return (b == '\n' || b == '\r') ? '?' : (char)b;
}

/* A text field of len bytes, quoted per RFC 4180 when it holds , or ". */
static inline char *put_text(char *p, const unsigned char *src, size_t len) {
  int quote = 0;
  for (size_t i = 0; i < len; i++) quote |= needs_quote(src[i]);
  if (!quote) {
    for (size_t i = 0; i < len; i++) *p++ = text_byte(src[i]);
    return p;
  }
  *p++ = '"';
  for (size_t i = 0; i < len; i++) {
    if (src[i] == '"') *p++ = '"';
    *p++ = text_byte(src[i]);
  }
  *p++ = '"';
  return p;
}

/* One row: seq,timestamp_ns,symbol,price,quantity,side then the ",<epoch>\n" tail. */
static inline char *put_row(char *p, const rpt_entry *e, const char *tail, size_t tail_len) {
  p = put_u64(p, e->seq);
  *p++ = ',';
  p = put_u64(p, e->timestamp_ns);
  *p++ = ',';
  const unsigned char *sym = (const unsigned char *)e->symbol;
  size_t len = 0;
  while (len < RPT_SYMBOL_LENGTH && sym[len] != 0) len++;
  p = put_text(p, sym, len);
  *p++ = ',';
  p = put_price(p, e->price_e4);
  *p++ = ',';
  p = put_u64(p, e->quantity);
  *p++ = ',';
  p = put_text(p, &e->side, e->side == 0 ? 0 : 1);
  memcpy(p, tail, tail_len);
  return p + tail_len;
}

/* ---- Any schema: each field by its type, as csv.ts makeFormatter ---------------------------- */

/* v with scale digits after the point (scale >= 1): "0.0042" when v has fewer digits. */
static inline char *put_scaled(char *p, uint64_t v, unsigned scale) {
  char digits[24];
  size_t len = (size_t)(put_u64(digits, v) - digits);
  if (len <= scale) {
    *p++ = '0';
    *p++ = '.';
    for (size_t i = len; i < scale; i++) *p++ = '0';
    memcpy(p, digits, len);
    return p + len;
  }
  size_t cut = len - scale;
  memcpy(p, digits, cut);
  p += cut;
  *p++ = '.';
  memcpy(p, digits + cut, scale);
  return p + scale;
}

static inline char *put_unsigned(char *p, uint64_t v, unsigned scale) {
  return scale ? put_scaled(p, v, scale) : put_u64(p, v);
}

static inline char *put_signed(char *p, int64_t x, unsigned scale) {
  uint64_t v = (uint64_t)x;
  if (x < 0) {
    *p++ = '-';
    v = 0 - v;
  }
  return put_unsigned(p, v, scale);
}

/* A float as JavaScript spells its specials; other values with %.17g (round-trips). */
static inline char *put_float(char *p, double x) {
  if (x != x) {
    memcpy(p, "NaN", 3);
    return p + 3;
  }
  if (x == 0) {
    if (__builtin_signbit(x)) *p++ = '-';
    *p++ = '0';
    return p;
  }
  if (__builtin_isinf(x)) {
    if (x < 0) *p++ = '-';
    memcpy(p, "Infinity", 8);
    return p + 8;
  }
  return p + snprintf(p, 32, "%.17g", x);
}

static const char BASE64[65] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The base64 of len bytes (RFC 4648, standard alphabet, '=' padding), as csv.ts writeBase64. */
static inline char *put_base64(char *p, const unsigned char *b, uint32_t len) {
  uint32_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t n = (uint32_t)b[i] << 16 | (uint32_t)b[i + 1] << 8 | b[i + 2];
    p[0] = BASE64[n >> 18];
    p[1] = BASE64[(n >> 12) & 63];
    p[2] = BASE64[(n >> 6) & 63];
    p[3] = BASE64[n & 63];
    p += 4;
  }
  if (i < len) {
    uint32_t n = (uint32_t)b[i] << 16 | (i + 1 < len ? (uint32_t)b[i + 1] << 8 : 0);
    p[0] = BASE64[n >> 18];
    p[1] = BASE64[(n >> 12) & 63];
    p[2] = i + 1 < len ? BASE64[(n >> 6) & 63] : '=';
    p[3] = '=';
    p += 4;
  }
  return p;
}

/* A bytes[N] field: the base64 of its L stored bytes; L above N is a damaged entry (exit 3, and
 * no row of the batch is written, as the reporter). */
static inline char *put_bytes(char *p, const unsigned char *e, const rpt_field *f) {
  uint32_t len = rpt_bytes_length(e, f);
  if (len > f->max_length) {
    uint64_t seq;
    memcpy(&seq, e, 8);
    die(EXIT_INVALID, "cannot use entry %llu of segment %s as field %s length must be at most %u: "
        "current value is %u", (unsigned long long)seq, segment_name, f->name, f->max_length, len);
  }
  return put_base64(p, e + f->offset + RPT_BYTES_LENGTH_SIZE, len);
}

static inline char *put_field(char *p, const unsigned char *e, const rpt_field *f) {
  const unsigned char *b = e + f->offset;
  switch ((rpt_type)f->type) {
  case RPT_T_U8: return put_unsigned(p, b[0], f->scale);
  case RPT_T_U16: { uint16_t v; memcpy(&v, b, 2); return put_unsigned(p, v, f->scale); }
  case RPT_T_U32: { uint32_t v; memcpy(&v, b, 4); return put_unsigned(p, v, f->scale); }
  case RPT_T_U64: { uint64_t v; memcpy(&v, b, 8); return put_unsigned(p, v, f->scale); }
  case RPT_T_I8: return put_signed(p, (int8_t)b[0], f->scale);
  case RPT_T_I16: { int16_t v; memcpy(&v, b, 2); return put_signed(p, v, f->scale); }
  case RPT_T_I32: { int32_t v; memcpy(&v, b, 4); return put_signed(p, v, f->scale); }
  case RPT_T_I64: { int64_t v; memcpy(&v, b, 8); return put_signed(p, v, f->scale); }
  case RPT_T_F32: { float v; memcpy(&v, b, 4); return put_float(p, (double)v); }
  case RPT_T_F64: { double v; memcpy(&v, b, 8); return put_float(p, v); }
  case RPT_T_CHAR: {
    size_t len = 0;
    while (len < f->size && b[len] != 0) len++;
    return put_text(p, b, len);
  }
  case RPT_T_BYTES: return put_bytes(p, e, f);
  }
  return p;
}

/* One row of a custom schema: seq,timestamp_ns,<fields> then the ",<epoch>\n" tail. */
static inline char *put_row_schema(char *p, const rpt_entry *e, const rpt_schema *s,
                                   const char *tail, size_t tail_len) {
  p = put_u64(p, e->seq);
  *p++ = ',';
  p = put_u64(p, e->timestamp_ns);
  for (uint32_t i = 0; i < s->field_count; i++) {
    *p++ = ',';
    p = put_field(p, (const unsigned char *)e, &s->fields[i]);
  }
  memcpy(p, tail, tail_len);
  return p + tail_len;
}

/* Most bytes one row of schema s takes, its tail (",<epoch>\n") included. */
static size_t max_row_bytes(const rpt_schema *s, size_t tail_len) {
  size_t n = 20 + 1 + 20 + tail_len;
  for (uint32_t i = 0; i < s->field_count; i++) {
    const rpt_field *f = &s->fields[i];
    n += 1; /* comma */
    if (f->type == RPT_T_CHAR) n += 2 * (size_t)f->size + 2;
    else if (f->type == RPT_T_BYTES) n += 4 * (((size_t)f->max_length + 2) / 3);
    else n += 32; /* a float (snprintf gets 32), or an integer with sign, point and 18 decimals */
  }
  return n;
}

/* ---- Loss reporting: contiguous ranges merged, as ring.ts RingReader ------------------------ */

static uint64_t loss_from = 0, loss_to = 0; /* pending range [from, to), empty when equal */
static uint64_t lost_total = 0, lost_uncommitted = 0;

static void flush_loss(void) {
  if (loss_to == loss_from) return;
  fprintf(stderr, "rpt_reader: lost entries %llu..%llu (%llu)\n", (unsigned long long)loss_from,
          (unsigned long long)(loss_to - 1), (unsigned long long)(loss_to - loss_from));
  loss_from = loss_to = 0;
}

static void lose(uint64_t from, uint64_t to) {
  if (to <= from) return;
  lost_total += to - from;
  lost_uncommitted += to - from;
  if (loss_to != loss_from && loss_to == from) {
    loss_to = to;
    return;
  }
  flush_loss();
  loss_from = from;
  loss_to = to;
}

/* ---- Main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  const char *name = RPT_DEFAULT_NAME, *out_path = NULL;
  uint64_t id = 0, count = 0;
  int have_id = 0, have_count = 0, from_start = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(USAGE, stdout);
      return 0;
    }
    if (strcmp(a, "--from-start") == 0) {
      from_start = 1;
      continue;
    }
    const char *flag = NULL, *value = NULL;
    static const char *const flags[] = {"name", "id", "out", "count"};
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
    } else if (strcmp(flag, "id") == 0) {
      id = parse_uint("id", value, 0, RPT_MAX_READERS - 1);
      have_id = 1;
    } else if (strcmp(flag, "out") == 0) {
      if (value[0] == '\0') die(EXIT_USAGE, "--out must be a file path: current value is \"\"");
      out_path = value;
    } else {
      count = parse_uint("count", value, 0, RPT_MAX_INDEX);
      have_count = 1;
    }
  }
  if (!have_id) die(EXIT_USAGE, "--id K (0 to 7) is required (see --help)");
  if (out_path == NULL) die(EXIT_USAGE, "--out FILE is required (see --help)");
  if (!valid_name(name)) {
    die(EXIT_USAGE,
        "segment name must be a slash then 1 to 30 characters of A-Z a-z 0-9 . _ -: current "
        "value is \"%s\"",
        name);
  }

  /* Open and validate. */
  int fd = shm_open(name, O_RDWR, 0600);
  if (fd < 0) {
    if (errno == ENOENT) die(EXIT_MISSING, "cannot open segment %s as it does not exist", name);
    die(EXIT_SYSTEM, "cannot open segment %s: shm_open: %s", name, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) die(EXIT_SYSTEM, "cannot open segment %s: fstat: %s", name, strerror(errno));
  uint64_t size = (uint64_t)st.st_size;
  if (size == 0) die(EXIT_MISSING, "cannot open segment %s as it is not initialised yet (size 0)", name);
  uint64_t largest = rpt_max_segment_size();
  if (size < RPT_HEADER_SIZE || size > largest) {
    die(EXIT_INVALID, "cannot use segment %s as its size must be %u to %llu bytes: current value is %llu",
        name, RPT_HEADER_SIZE, (unsigned long long)largest, (unsigned long long)size);
  }
  void *map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) die(EXIT_SYSTEM, "cannot map segment %s: mmap: %s", name, strerror(errno));
  rpt_header *h = (rpt_header *)map;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == 0) {
    die(EXIT_MISSING, "cannot open segment %s as it is not initialised yet (magic is 0)", name);
  }
  int bad_reader = 0;
  rpt_check check = rpt_header_check(h, size, &bad_reader);
  if (check != RPT_OK) {
    unsigned long long v = rpt_check_value(h, size, check, bad_reader);
    die(EXIT_INVALID, "cannot use segment %s as %s: current value is %llu (0x%llx)", name,
        rpt_check_message(check), v, v);
  }

  static rpt_schema schema;
  rpt_schema_problem why;
  if (rpt_schema_read(h, size, &schema, &why) != RPT_SCHEMA_OK) {
    char text[256];
    die(EXIT_INVALID, "cannot use segment %s as %s", name,
        rpt_schema_problem_text(&why, text, sizeof text));
  }
  segment_name = name;

  /* Claim the reader id. */
  switch (rpt_claim_role(fd, h, (int)id, &owner_claim)) {
  case RPT_CLAIM_ERROR:
    die(EXIT_SYSTEM, "cannot lock reader id %llu of segment %s: fcntl: %s", (unsigned long long)id,
        name, strerror(errno));
    break;
  case RPT_CLAIM_HELD:
    die(EXIT_OWNERSHIP, "cannot attach reader as reader id %llu of segment %s is held by live pid %lu",
        (unsigned long long)id, name, (unsigned long)owner_claim.holder);
    break;
  case RPT_CLAIM_TAKEN: break;
  }
  owner_header = h;
  owner_role = (int)id;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  FILE *out = fopen(out_path, "w");
  if (out == NULL) die(EXIT_OUTPUT, "cannot open output file %s: %s", out_path, strerror(errno));
  fputs("seq,timestamp_ns", out);
  for (uint32_t i = 0; i < schema.field_count; i++) fprintf(out, ",%s", schema.fields[i].name);
  fputs(",epoch\n", out);
  if (ferror(out) || fflush(out) != 0) {
    die(EXIT_OUTPUT, "cannot write output file %s: %s", out_path, strerror(errno));
  }

  const uint64_t epoch = h->epoch;
  char tail[32];
  int tail_len = snprintf(tail, sizeof tail, ",%llu\n", (unsigned long long)epoch);
  const char *slots = (const char *)h + h->entries_offset;
  const uint64_t capacity = h->capacity, mask = capacity - 1;
  const uint32_t entry_size = h->entry_size;
  /* Sequential, but across pages the hardware prefetcher stops: ask 1 KiB (or a slot) ahead. */
  const uint64_t ahead = entry_size >= 1024 ? 1 : 1024 / entry_size;
  uint64_t *read_ptr = &h->read_ptrs[id];
  uint64_t pos = from_start ? 0 : rpt_load(read_ptr);
  if (from_start) rpt_store(read_ptr, 0);
  const uint64_t target = have_count ? pos + count : rpt_load(&h->write_ptr);
  if (target > RPT_MAX_INDEX) die(EXIT_USAGE, "--count %llu would pass 2^52-1", (unsigned long long)count);

  const size_t row_bytes = max_row_bytes(&schema, (size_t)tail_len);
  const uint64_t batch = row_bytes * BATCH <= MAX_BATCH_TEXT ? BATCH
                         : row_bytes >= MAX_BATCH_TEXT      ? 1
                                                            : MAX_BATCH_TEXT / row_bytes;
  char *text = malloc((size_t)batch * row_bytes);
  rpt_entry *e = aligned_alloc(64, entry_size);
  if (text == NULL || e == NULL) {
    die(EXIT_SYSTEM, "cannot allocate %llu bytes", (unsigned long long)(batch * row_bytes));
  }
  uint64_t rows = 0;
  const uint64_t t0 = now_ns(CLOCK_MONOTONIC);
  uint64_t last_beat = 0;
  unsigned idle = 0;
  rpt_store(&h->reader_heartbeat_ns[id], now_ns(CLOCK_REALTIME));
  while (pos < target && stop_signal == 0) {
    uint64_t w = rpt_load(&h->write_ptr);
    if (w <= pos) {
      /* Waiting for the writer (only with --count): spin briefly, then yield, then sleep. */
      if (++idle < 200) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else if (idle < 400) {
        sched_yield();
      } else {
        nanosleep(&(struct timespec){0, 50000}, NULL);
      }
      if ((idle & 1023) == 0) rpt_store(&h->reader_heartbeat_ns[id], now_ns(CLOCK_REALTIME));
      continue;
    }
    idle = 0;
    if (w - pos > capacity) {
      /* Everything older than one lap is gone already: skip it as one range. */
      uint64_t keep = w - capacity < target ? w - capacity : target;
      lose(pos, keep);
      pos = keep;
    }
    uint64_t end = w < target ? w : target;
    if (end - pos > batch) end = pos + batch;
    char *p = text;
    for (; pos < end; pos++) {
      __builtin_prefetch(slots + ((pos + ahead) & mask) * entry_size);
      if (rpt_read_slot(slots + (pos & mask) * entry_size, pos, e, entry_size)) {
        /* The default schema keeps its fixed-field formatter; any other goes field by field. */
        p = schema.is_default ? put_row(p, e, tail, (size_t)tail_len)
                              : put_row_schema(p, e, &schema, tail, (size_t)tail_len);
        rows++;
      } else {
        lose(pos, pos + 1);
      }
    }
    size_t n = (size_t)(p - text);
    if (n > 0 && (fwrite(text, 1, n, out) != n || fflush(out) != 0)) {
      die(EXIT_OUTPUT, "cannot write output file %s: %s", out_path, strerror(errno));
    }
    flush_loss();
    rpt_store(read_ptr, pos);
    if (lost_uncommitted != 0) {
      __atomic_fetch_add(&h->reader_lost[id], lost_uncommitted, __ATOMIC_RELEASE);
      lost_uncommitted = 0;
    }
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (now - last_beat >= 250000000u) {
      rpt_store(&h->reader_heartbeat_ns[id], now_ns(CLOCK_REALTIME));
      last_beat = now;
    }
  }
  double seconds = (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;
  if (fclose(out) != 0) die(EXIT_OUTPUT, "cannot close output file %s: %s", out_path, strerror(errno));
  rpt_store(&h->reader_heartbeat_ns[id], now_ns(CLOCK_REALTIME));
  release_owner();
  free(text);
  free(e);
  munmap(map, (size_t)size);
  close(fd);
  double per_s = seconds > 0 ? (double)rows / seconds : 0.0;
  printf("rpt_reader: read %llu rows in %.3f s (%.0f rows/s)\n", (unsigned long long)rows, seconds,
         per_s);
  if (stop_signal != 0) {
    fprintf(stderr, "rpt_reader: stopped by signal %d at read_ptr %llu; lost %llu\n",
            (int)stop_signal, (unsigned long long)pos, (unsigned long long)lost_total);
  }
  return 0;
}
