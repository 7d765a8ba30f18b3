/*
 * fill_writer: the bench's native C baseline for writing large entries (bench-only).
 *
 * Publishes entries into an existing segment (made by the bench, any entry size) by the same
 * protocol as the Deno RingWriter and rpt_shm.h's rpt_publish_slot: busy bit (bit 63 of seq) and a
 * release fence, the u32 length word and memcpy of the user's buffer into the bytes[N] field at
 * --field-offset, the timestamp from clock_gettime(CLOCK_REALTIME), seq = index (release), then
 * write_ptr = index + 1 (release). Writes --warmup entries untimed (page faults, caches), then
 * times --count entries with CLOCK_MONOTONIC and prints
 *
 *   fill_writer: wrote N entries of E bytes in S s (R entries/s)
 *
 *   fill_writer --name /x --count N --field-offset O --length L [--warmup W]
 *
 * Exit status: 0 ok, 2 bad arguments, 3 invalid segment, 7 system error.
 * Build: cc -O2 -std=c11 -I../include fill_writer.c -o fill_writer -lrt
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rpt_shm.h"

static uint64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t u32_at(const uint8_t *base, uint32_t offset) {
  uint32_t v;
  memcpy(&v, base + offset, 4);
  return v;
}

/* Publishes entries [from, from + n) holding the first `length` bytes of `buf`. */
static void fill(uint8_t *base, uint64_t from, uint64_t n, const uint8_t *buf, uint32_t length,
                 uint32_t field_offset) {
  uint32_t capacity = u32_at(base, RPT_CAPACITY_OFFSET);
  uint32_t entry_size = u32_at(base, RPT_ENTRY_SIZE_OFFSET);
  uint8_t *slots = base + u32_at(base, RPT_ENTRIES_OFFSET_OFFSET);
  uint64_t *write_ptr = (uint64_t *)(base + RPT_WRITE_PTR_OFFSET);
  uint64_t mask = capacity - 1u;
  for (uint64_t i = from; i < from + n; i++) {
    uint8_t *slot = slots + (size_t)(i & mask) * entry_size;
    uint64_t *seq = (uint64_t *)slot;
    uint64_t old = __atomic_load_n(seq, __ATOMIC_RELAXED);
    __atomic_store_n(seq, old | RPT_BUSY_BIT, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(slot + field_offset, &length, 4);
    memcpy(slot + field_offset + 4, buf, length);
    uint64_t ts = now_ns(CLOCK_REALTIME);
    __atomic_store_n((uint64_t *)(slot + 8), ts, __ATOMIC_RELAXED);
    __atomic_store_n(seq, i, __ATOMIC_RELEASE);
    __atomic_store_n(write_ptr, i + 1, __ATOMIC_RELEASE);
  }
}

int main(int argc, char **argv) {
  const char *name = NULL;
  long long count = -1, warmup = 0, field_offset = -1, length = -1;
  for (int k = 1; k + 1 < argc; k += 2) {
    long long v = strtoll(argv[k + 1], NULL, 10);
    if (strcmp(argv[k], "--name") == 0) name = argv[k + 1];
    else if (strcmp(argv[k], "--count") == 0) count = v;
    else if (strcmp(argv[k], "--warmup") == 0) warmup = v;
    else if (strcmp(argv[k], "--field-offset") == 0) field_offset = v;
    else if (strcmp(argv[k], "--length") == 0) length = v;
  }
  if (name == NULL || count < 0 || warmup < 0 || field_offset < 16 || length < 0 || argc % 2 == 0) {
    fputs("Usage: fill_writer --name /x --count N --field-offset O --length L [--warmup W]\n",
          stderr);
    return 2;
  }
  int fd = shm_open(name, O_RDWR, 0);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    perror("fill_writer: cannot open the segment");
    return 7;
  }
  uint8_t *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    perror("fill_writer: cannot map the segment");
    return 7;
  }
  uint32_t entry_size = u32_at(base, RPT_ENTRY_SIZE_OFFSET);
  if (u32_at(base, RPT_MAGIC_OFFSET) != RPT_MAGIC || field_offset + 4 + length > entry_size) {
    fprintf(stderr, "fill_writer: the field (offset %lld, %lld bytes) does not fit entry size %u\n",
            field_offset, length, entry_size);
    return 3;
  }
  uint8_t *buf = malloc((size_t)length + 1);
  for (long long j = 0; j < length; j++) buf[j] = (uint8_t)(j * 7 + 31);
  uint64_t start = __atomic_load_n((uint64_t *)(base + RPT_WRITE_PTR_OFFSET), __ATOMIC_ACQUIRE);
  fill(base, start, (uint64_t)warmup, buf, (uint32_t)length, (uint32_t)field_offset);
  uint64_t t0 = now_ns(CLOCK_MONOTONIC);
  fill(base, start + (uint64_t)warmup, (uint64_t)count, buf, (uint32_t)length,
       (uint32_t)field_offset);
  double seconds = (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;
  printf("fill_writer: wrote %lld entries of %u bytes in %.3f s (%.0f entries/s)\n", count,
         entry_size, seconds, (double)count / (seconds > 0 ? seconds : 1e-9));
  free(buf);
  munmap(base, (size_t)st.st_size);
  close(fd);
  return 0;
}
