#!/usr/bin/env python3
"""A reader of the rpt shared-memory ring in Python 3.9+, standard library only.

Written from the specification in docs/ (not from the TypeScript): docs/segment.md (the header,
the entry, names), docs/schema.md (the schema blocks), docs/protocol.md (the read protocol,
lapping and loss accounting), docs/ownership.md (the reader id's lock), docs/csv.md (the
reporter's CSV and its output file rules).

    python3 examples/python/rpt_shm.py report ID [--name /rpt_sys_shm] [--out output_ID.csv]
                                                 [--batch 4096] [--until-caught-up] [--quiet]

`report` does what `deno task reporter ID` does, byte for byte in the CSV: it holds reader id ID
with its open-file-description lock, reconciles with the output file (repairs a torn last line,
moves a file of another epoch or schema aside, resumes after its last row), then appends one row
per entry and stores read_ptrs[ID] after the rows are written. It stops on SIGINT or SIGTERM, or,
with --until-caught-up, as soon as it has read everything up to write_ptr (for tests and batch
jobs). Unlike the reporter it does not follow a segment that is re-created while it runs, and it
stores read_ptr after every batch rather than on a timer.

As a library:

    with Segment.open("/rpt_sys_shm") as seg, Reader(seg, 3) as reader:
        for record in reader.records():     # what is there now, from read_ptrs[3]
            print(record.seq, record.timestamp_ns, record.values)
        reader.commit()

Memory ordering: Python has no atomics. This reader loads and stores the 64-bit words (write_ptr,
seq, read_ptr) as single aligned 8-byte accesses through a memoryview (one `mov` on x86-64) and
copies a slot with one memcpy between its two seq loads. That is the protocol of docs/protocol.md
on x86-64, whose loads are not reordered with other loads; on a weakly ordered CPU (AArch64) the
copy needs acquire loads or fences that Python cannot express, so use it on x86-64 only.
"""

import argparse
import base64
import errno
import fcntl
import math
import mmap
import os
import re
import signal
import struct
import sys
import time

# ---- Exit statuses (docs/operations.md) ------------------------------------------------------
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SEGMENT_INVALID = 3
EXIT_OUTPUT = 5
EXIT_OWNERSHIP = 6
EXIT_SYSTEM = 7
EXIT_OUTPUT_MISMATCH = 8

# ---- Layout (docs/segment.md) ----------------------------------------------------------------
WRITE_PTR = 0x00
READ_PTRS = 0x08
MAGIC_AT = 0x48
VERSION_AT = 0x4C
CAPACITY_AT = 0x50
ENTRY_SIZE_AT = 0x54
ENTRIES_OFFSET_AT = 0x58
EPOCH_AT = 0x60
SCHEMA_FINGERPRINT_AT = 0x90
SCHEMA_OFFSET_AT = 0x98
SCHEMA_LENGTH_AT = 0x9C
READER_OWNERS = 0xC0
READER_HEARTBEATS = 0x100
READER_LOST = 0x140
HEADER_SIZE = 0x180
MAGIC = 0x53545052  # "RPTS"
MAX_CAPACITY = 1 << 24
MAX_RING_BYTES = 1 << 30
MAX_ENTRIES_OFFSET = 1 << 22
MAX_INDEX = 2**52 - 1
SCHEMA_MAGIC = 0x48435352  # "RSCH"
NAME_RE = re.compile(r"^/[A-Za-z0-9._-]{1,30}$")
FIELD_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")

# ---- Ownership (docs/ownership.md): Linux, x86-64 and AArch64 --------------------------------
F_OFD_SETLK = 37
F_WRLCK = 1
F_UNLCK = 2
SEEK_SET = 0

# ---- Field types (docs/schema.md) ------------------------------------------------------------
#: code -> (type name, kind, size)
SCALARS = {
    1: ("u8", "uint", 1),
    2: ("u16", "uint", 2),
    3: ("u32", "uint", 4),
    4: ("u64", "uint", 8),
    5: ("i8", "int", 1),
    6: ("i16", "int", 2),
    7: ("i32", "int", 4),
    8: ("i64", "int", 8),
    9: ("f32", "float", 4),
    10: ("f64", "float", 8),
}
CHAR = 11
BYTES = 12


class RptError(Exception):
    """An error with its exit status; the message is one line naming the value."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def fnv1a64(data):
    """FNV-1a 64 of `data`: the schema fingerprint."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class Field:
    """One schema field: name, type code, kind, size taken, value length N, scale, offset."""

    def __init__(self, name, code, size, scale, offset):
        self.name = name
        self.code = code
        self.size = size
        self.scale = scale
        self.offset = offset
        if code in SCALARS:
            self.type, self.kind, _ = SCALARS[code]
            self.max_length = size
        elif code == CHAR:
            self.type, self.kind, self.max_length = "char[%d]" % size, "char", size
        else:
            self.type, self.kind, self.max_length = "bytes[%d]" % (size - 4), "bytes", size - 4


DEFAULT_FIELDS = [
    Field("symbol", CHAR, 8, 0, 0x10),
    Field("price", 8, 8, 4, 0x18),
    Field("quantity", 3, 4, 0, 0x20),
    Field("side", CHAR, 1, 0, 0x24),
]


def layout(specs):
    """Re-lays fields (name, code, size, scale) out as docs/schema.md says: in order, natural
    alignment (4 for bytes[N]), from entry byte 0x10. Returns Fields."""
    out = []
    at = 0x10
    for name, code, size, scale in specs:
        align = 4 if code == BYTES else 1 if code == CHAR else size
        at = (at + align - 1) // align * align
        out.append(Field(name, code, size, scale, at))
        at += size
    return out


def encode_block(fields, version):
    """The schema block of `fields` in `version` 1 or 2 (docs/schema.md, byte by byte)."""
    record = 36 if version == 1 else 44
    block = bytearray(8 + record * len(fields))
    struct.pack_into("<IHH", block, 0, SCHEMA_MAGIC, version, len(fields))
    for i, f in enumerate(fields):
        at = 8 + i * record
        block[at : at + len(f.name)] = f.name.encode("ascii")
        if version == 1:
            struct.pack_into("<BBBB", block, at + 32, f.code, f.size, f.scale, f.offset)
        else:
            struct.pack_into("<BBHII", block, at + 32, f.code, f.scale, 0, f.size, f.offset)
    return bytes(block)


def decode_block(block, entry_size):
    """Decodes and checks a schema block of version 1 or 2: every byte must be what encoding the
    decoded fields gives back. Returns the Fields or raises RptError (exit 3)."""

    def fail(what):
        raise RptError("Cannot use schema block as %s" % what, EXIT_SEGMENT_INVALID)

    if len(block) < 8:
        fail("it must be at least 8 bytes: current length is %d" % len(block))
    magic, version, count = struct.unpack_from("<IHH", block, 0)
    if magic != SCHEMA_MAGIC:
        fail("its magic must be 0x48435352: current value is 0x%08x" % magic)
    if version not in (1, 2):
        fail("its version must be 1 or 2: current value is %d" % version)
    record = 36 if version == 1 else 44
    if count < 1 or count > (48 if version == 1 else 65520):
        fail("its field_count is out of range: current value is %d" % count)
    if len(block) != 8 + record * count:
        fail("its length must be 8 + %d x field_count: current value is %d" % (record, len(block)))
    specs = []
    for i in range(count):
        at = 8 + i * record
        name = block[at : at + 32].split(b"\0", 1)[0].decode("ascii", "replace")
        code = block[at + 32]
        if version == 1:
            size, scale = block[at + 33], block[at + 34]
        else:
            scale = block[at + 33]
            size = struct.unpack_from("<I", block, at + 36)[0]
        if code not in SCALARS and code != CHAR and not (code == BYTES and version == 2):
            fail("field %d type code is unknown: current value is %d" % (i, code))
        if not FIELD_NAME_RE.match(name) or len(name) > 31 or name in ("seq", "timestamp_ns", "epoch"):
            fail("field %d name is invalid: current value is %r" % (i, name))
        if code in SCALARS and size != SCALARS[code][2]:
            fail("field %s size must be %d: current value is %d" % (name, SCALARS[code][2], size))
        if scale > 18 or (scale != 0 and code not in SCALARS) or (scale and SCALARS[code][1] == "float"):
            fail("field %s scale is invalid: current value is %d" % (name, scale))
        specs.append((name, code, size, scale))
    fields = layout(specs)
    if len({f.name for f in fields}) != len(fields):
        fail("its field names must be unique")
    if block != encode_block(fields, version):
        fail("its bytes are not those of its fields laid out in order (sizes, offsets, padding)")
    end = fields[-1].offset + fields[-1].size
    if version == 1 and (end > 64 or any(f.code == BYTES for f in fields)):
        fail("version 1 must describe fields within a 64-byte entry")
    if end > entry_size:
        fail("its fields end at entry byte %d but entry_size is %d" % (end, entry_size))
    return fields


def csv_header(fields):
    """`seq,timestamp_ns,<fields>,epoch` (docs/csv.md), as bytes, without its newline."""
    return ("seq,timestamp_ns," + "".join(f.name + "," for f in fields) + "epoch").encode("ascii")


# ---- The segment -----------------------------------------------------------------------------


class NotReady(Exception):
    """The segment does not exist yet, or its creator has not stored the magic yet."""


class Segment:
    """A mapped segment, validated (docs/segment.md); the schema read from its block."""

    def __init__(self, name, fd, size, mm):
        self.name = name
        self.fd = fd
        self.size = size
        self.mm = mm
        self.u64 = memoryview(mm).cast("Q")  # aligned 8-byte loads and stores
        try:
            self._validate()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def path_of(name):
        if not isinstance(name, str) or not NAME_RE.match(name) or name in ("/.", "/.."):
            raise RptError(
                "Cannot use segment name as it must be a slash then 1 to 30 characters of "
                "A-Z a-z 0-9 . _ - (not . or ..): current value is %r" % (name,),
                EXIT_USAGE,
            )
        return "/dev/shm/" + name[1:]

    @classmethod
    def open(cls, name):
        path = cls.path_of(name)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise NotReady("Cannot open segment %s as it does not exist" % name)
        except OSError as e:
            raise RptError("Cannot open segment %s: %s" % (name, e.strerror), EXIT_SYSTEM)
        size = os.fstat(fd).st_size
        try:
            if size == 0:
                raise NotReady("segment %s is not initialised yet (size 0)" % name)
            if size < HEADER_SIZE or size % 64 != 0 or size > MAX_ENTRIES_OFFSET + MAX_RING_BYTES:
                raise RptError(
                    "Cannot use segment %s as its size is invalid: current value is %d" % (name, size),
                    EXIT_SEGMENT_INVALID,
                )
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(name, fd, size, mm)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def close(self):
        if self.mm is None:
            return
        self.u64.release()
        self.mm.close()
        os.close(self.fd)  # drops every lock taken through this descriptor
        self.mm = None

    def load(self, offset):
        """One aligned 8-byte load of the u64 at `offset`."""
        return self.u64[offset >> 3]

    def store(self, offset, value):
        """One aligned 8-byte store of the u64 at `offset`."""
        self.u64[offset >> 3] = value

    def _u32(self, offset):
        return struct.unpack_from("<I", self.mm, offset)[0]

    def _validate(self):
        def fail(what):
            raise RptError("Cannot use segment %s as %s" % (self.name, what), EXIT_SEGMENT_INVALID)

        magic = self._u32(MAGIC_AT)
        if magic == 0:
            raise NotReady("segment %s is not initialised yet (magic is 0)" % self.name)
        if magic != MAGIC:
            fail("its magic must be 0x53545052: current value is 0x%08X" % magic)
        version = self._u32(VERSION_AT)
        if version != 1:
            fail("its layout version must be 1: current value is %d" % version)
        es = self._u32(ENTRY_SIZE_AT)
        if es < 64 or es > 65536 or es & (es - 1):
            fail("its entry_size must be a power of two from 64 to 65536: current value is %d" % es)
        cap = self._u32(CAPACITY_AT)
        if cap < 1 or cap > MAX_CAPACITY or cap & (cap - 1):
            fail("its capacity must be a power of two from 1 to 2^24: current value is %d" % cap)
        if cap * es > MAX_RING_BYTES:
            fail("its capacity x entry_size must be at most 2^30 bytes")
        eo = self._u32(ENTRIES_OFFSET_AT)
        if eo < HEADER_SIZE or eo > MAX_ENTRIES_OFFSET or eo % 64:
            fail("its entries_offset must be a multiple of 64 from 384 to 4194304: current value is %d" % eo)
        if self.size != eo + cap * es:
            fail("its size must be entries_offset + capacity x entry_size = %d bytes" % (eo + cap * es))
        self.epoch = self.load(EPOCH_AT)
        if self.epoch == 0:
            fail("its epoch must be non-zero: current value is 0")
        readers = [self.load(READ_PTRS + 8 * k) for k in range(8)]  # before write_ptr
        w = self.load(WRITE_PTR)
        if w > MAX_INDEX:
            fail("its write_ptr must be at most 2^52-1: current value is %d" % w)
        for k, r in enumerate(readers):
            if r > w:
                fail("read_ptrs[%d] must be at most write_ptr %d: current value is %d" % (k, w, r))
        self.capacity, self.entry_size, self.entries_offset = cap, es, eo
        self.fields = self._schema(fail)

    def _schema(self, fail):
        fp = self.load(SCHEMA_FINGERPRINT_AT)
        offset, length = self._u32(SCHEMA_OFFSET_AT), self._u32(SCHEMA_LENGTH_AT)
        if fp == 0 and offset == 0 and length == 0:
            if self.entry_size < 64:
                fail("the default schema needs 64-byte entries")
            return DEFAULT_FIELDS
        if offset != HEADER_SIZE:
            fail("its schema block offset must be 0x180 (or 0 for no block): current value is %d" % offset)
        if length < 8 or offset + length > self.entries_offset:
            fail("its schema block length must fit before entries_offset: current value is %d" % length)
        block = bytes(self.mm[offset : offset + length])
        if fnv1a64(block) != fp:
            fail("its schema fingerprint must be the hash of its block: current value is 0x%016x" % fp)
        try:
            return decode_block(block, self.entry_size)
        except RptError as e:
            fail(str(e).replace("Cannot use ", ""))

    def write_ptr(self):
        return self.load(WRITE_PTR)

    def slot(self, index):
        return self.entries_offset + (index & (self.capacity - 1)) * self.entry_size


# ---- A reader id: lock, position, lapping and losses (docs/protocol.md, docs/ownership.md) ----


def start_token(pid):
    """The start-time token of `pid`: field 22 of /proc/PID/stat (start time in clock ticks since
    boot) modulo 2^32, 1 when that is 0."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        text = f.read()
    start = int(text[text.rindex(b")") + 2 :].split()[19])
    return (start % 2**32) or 1


def ofd_lock(fd, start, length, kind):
    """fcntl(fd, F_OFD_SETLK, struct flock) on [start, start + length); False if held elsewhere."""
    # struct flock on Linux x86-64 and AArch64: l_type i16 @0, l_whence i16 @2, l_start i64 @8,
    # l_len i64 @16, l_pid i32 @24 (0 for OFD locks); 32 bytes.
    lock = struct.pack("<hh4xqqi4x", kind, SEEK_SET, start, length, 0)
    try:
        fcntl.fcntl(fd, F_OFD_SETLK, lock)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


class Record:
    """One entry: its seq, timestamp_ns, the raw slot, and its fields decoded by name."""

    def __init__(self, seq, timestamp_ns, slot, fields):
        self.seq = seq
        self.timestamp_ns = timestamp_ns
        self.slot = slot
        self._fields = fields

    @property
    def values(self):
        """The schema's fields as Python values: int, float, bytes (char up to its first NUL,
        bytes[N] its L bytes), and a scaled integer as the string the CSV prints."""
        return {f.name: decode_value(self.slot, f) for f in self._fields}


class Reader:
    """Reader id `rid` of `seg`, held by its OFD lock until closed. Resumes at read_ptrs[rid]."""

    def __init__(self, seg, rid, on_loss=None):
        if not isinstance(rid, int) or rid < 0 or rid > 7:
            raise RptError("Cannot attach reader as reader id must be 0..7: current value is %r" % (rid,), EXIT_USAGE)
        self.seg = seg
        self.id = rid
        self.on_loss = on_loss
        lock_at = READER_OWNERS + 8 * rid
        if not ofd_lock(seg.fd, lock_at, 8, F_WRLCK):
            holder = seg.load(lock_at) & 0xFFFFFFFF
            raise RptError(
                "Cannot attach rpt_shm.py as reader id %d of segment %s is held by live pid %d"
                % (rid, seg.name, holder),
                EXIT_OWNERSHIP,
            )
        self.owner = (start_token(os.getpid()) << 32) | os.getpid()
        seg.store(lock_at, self.owner)  # after the lock: the word only records who holds it
        self.pos = seg.load(READ_PTRS + 8 * rid)
        self.lost = 0
        self._uncommitted_lost = 0
        self._loss = None  # the open loss range [from, to)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def close(self):
        """Clears the owner word (still ours: we hold the lock), then releases the lock."""
        if self.seg.mm is None:
            return
        at = READER_OWNERS + 8 * self.id
        if self.seg.load(at) == self.owner:
            self.seg.store(at, 0)
        ofd_lock(self.seg.fd, at, 8, F_UNLCK)

    def read_batch(self, most):
        """Copies up to `most` entries from the cursor, each checked by its seq before and after
        the copy. Entries overwritten first are skipped and counted as lost. Returns the slots."""
        seg = self.seg
        w = seg.write_ptr()
        pos = self.pos
        if w - pos > seg.capacity:  # a whole lap behind: all of it is gone, one range
            self._lose(pos, w - seg.capacity)
            pos = w - seg.capacity
        count = min(w - pos, most)
        es = seg.entry_size
        out = []
        for i in range(pos, pos + count):
            at = seg.slot(i)
            if seg.load(at) != i:
                self._lose(i, i + 1)  # being rewritten or rewritten: skip this one entry
                continue
            copy = seg.mm[at : at + es]
            if seg.load(at) != i:
                self._lose(i, i + 1)
                continue
            out.append(copy)
        self.pos = pos + count
        self._flush_loss()
        return out

    def records(self, most=4096):
        """Iterates the records available now (one read_batch)."""
        for slot in self.read_batch(most):
            seq, ts = struct.unpack_from("<QQ", slot, 0)
            yield Record(seq, ts, slot, self.seg.fields)

    def commit(self):
        """Stores read_ptrs[id] (one 8-byte store), then adds the new losses to reader_lost[id]."""
        self.seg.store(READ_PTRS + 8 * self.id, self.pos)
        if self._uncommitted_lost:
            at = READER_LOST + 8 * self.id
            self.seg.store(at, self.seg.load(at) + self._uncommitted_lost)
            self._uncommitted_lost = 0

    def commit_position(self, position):
        """Moves the cursor to `position` and stores it as read_ptrs[id]."""
        self.pos = position
        self.seg.store(READ_PTRS + 8 * self.id, position)

    def heartbeat(self):
        self.seg.store(READER_HEARTBEATS + 8 * self.id, time.time_ns())

    def _lose(self, start, end):
        self.lost += end - start
        self._uncommitted_lost += end - start
        if self._loss is not None and self._loss[1] == start:
            self._loss[1] = end
            return
        self._flush_loss()
        self._loss = [start, end]

    def _flush_loss(self):
        if self._loss is not None:
            start, end = self._loss
            self._loss = None
            if self.on_loss:
                self.on_loss(start, end)


# ---- Values and the CSV (docs/csv.md) ---------------------------------------------------------


def int_value(slot, f):
    return int.from_bytes(slot[f.offset : f.offset + f.size], "little", signed=f.kind == "int")


def scaled(v, scale):
    """An integer printed with `scale` digits after the point: -10 at scale 9 is -0.000000010."""
    if scale == 0:
        return str(v)
    digits = str(abs(v)).rjust(scale + 1, "0")
    return ("-" if v < 0 else "") + digits[:-scale] + "." + digits[-scale:]


def js_number(x):
    """A double as ECMAScript's Number::toString prints it (shortest round-trip digits), but
    negative zero as -0."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    all_digits = whole + frac
    n = len(whole) + (int(exp) if exp else 0)  # the point sits after n digits
    digits = all_digits.lstrip("0")
    n -= len(all_digits) - len(digits)
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))


def bytes_value(slot, f, seq):
    length = struct.unpack_from("<I", slot, f.offset)[0]
    if length > f.max_length:
        raise RptError(
            "Cannot use entry %d as field %s length must be at most %d: current value is %d"
            % (seq, f.name, f.max_length, length),
            EXIT_SEGMENT_INVALID,
        )
    return slot[f.offset + 4 : f.offset + 4 + length]


def decode_value(slot, f):
    if f.kind == "char":
        return slot[f.offset : f.offset + f.size].split(b"\0", 1)[0]
    if f.kind == "bytes":
        return bytes_value(slot, f, struct.unpack_from("<Q", slot, 0)[0])
    if f.kind == "float":
        return struct.unpack_from("<f" if f.size == 4 else "<d", slot, f.offset)[0]
    v = int_value(slot, f)
    return scaled(v, f.scale) if f.scale else v


def csv_text(value):
    """A char field: quoted (quotes doubled) if it holds a comma or a quote; CR and LF as '?';
    every other byte raw."""
    value = value.replace(b"\n", b"?").replace(b"\r", b"?")
    if b"," in value or b'"' in value:
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


def format_field(slot, f, seq):
    if f.kind == "char":
        return csv_text(slot[f.offset : f.offset + f.size].split(b"\0", 1)[0])
    if f.kind == "bytes":
        return base64.b64encode(bytes_value(slot, f, seq))
    if f.kind == "float":
        x = struct.unpack_from("<f" if f.size == 4 else "<d", slot, f.offset)[0]
        return js_number(x).encode("ascii")
    return scaled(int_value(slot, f), f.scale).encode("ascii")


def format_row(slot, fields, epoch_tail):
    """One CSV row: seq, timestamp_ns, the fields, then `epoch_tail` (b",<epoch>\\n")."""
    seq, ts = struct.unpack_from("<QQ", slot, 0)
    parts = [str(seq).encode(), str(ts).encode()]
    parts.extend(format_field(slot, f, seq) for f in fields)
    return b",".join(parts) + epoch_tail


def split_row(line):
    """Splits one CSV line (bytes, no newline) undoing RFC 4180 quoting; None if malformed."""
    fields = []
    i = 0
    n = len(line)
    while i <= n:
        if i < n and line[i : i + 1] == b'"':
            value = bytearray()
            i += 1
            while True:
                if i >= n:
                    return None
                if line[i : i + 1] == b'"':
                    if line[i + 1 : i + 2] == b'"':
                        value += b'"'
                        i += 2
                        continue
                    i += 1
                    break
                value += line[i : i + 1]
                i += 1
            fields.append(bytes(value))
            if i < n and line[i : i + 1] != b",":
                return None
            i += 1
        else:
            end = line.find(b",", i)
            if end < 0:
                end = n
            fields.append(line[i:end])
            i = end + 1
    return fields


def parse_row_ends(line, columns):
    """(seq, epoch) of a reporter row of `columns` columns, or None."""
    fields = split_row(line)
    if fields is None or len(fields) != columns:
        return None
    seq, ts, epoch = fields[0], fields[1], fields[-1]
    if not (seq.isdigit() and ts.isdigit() and epoch.isdigit()):
        return None
    return int(seq), int(epoch)


# ---- The output file (docs/csv.md, "Existing output files") -----------------------------------

TAIL_BYTES = 512 * 1024
OTHER_HEADER_RE = re.compile(rb"^seq,timestamp_ns(,[a-z_][a-z0-9_]*)+,epoch$")


class OutputFile:
    """The CSV file, opened, flock-ed, checked and repaired; appended to in whole batches."""

    def __init__(self, path, header):
        self.path = path
        self.header_line = header + b"\n"
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RptError("Cannot open output file %s: %s" % (path, e.strerror), EXIT_OUTPUT)
        if not self._lock(self.fd):
            os.close(self.fd)
            raise RptError(
                "Cannot write output file %s as another process holds its lock (one reporter per file)" % path,
                EXIT_OWNERSHIP,
            )
        try:
            self.last, self.repaired, self.schema_changed = self._inspect()
        except BaseException:
            os.close(self.fd)
            raise

    @staticmethod
    def _lock(fd):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise

    def _mismatch(self, what):
        return RptError("Cannot use output file %s as %s" % (self.path, what), EXIT_OUTPUT_MISMATCH)

    def _inspect(self):
        """Returns (last row as (seq, epoch) or None, bytes of a torn line removed, whether the
        file holds another schema's header)."""
        fd, header = self.fd, self.header_line
        size = os.fstat(fd).st_size
        if size == 0:
            os.write(fd, header)
            return None, 0, False
        head = os.pread(fd, min(size, len(header)), 0)
        if size < len(header) and not head.endswith(b"\n") and header.startswith(head):
            os.ftruncate(fd, 0)  # a crash while the header itself was written
            os.pwrite(fd, header, 0)
            os.lseek(fd, 0, os.SEEK_END)
            return None, size, False
        header_length, columns, changed = len(header), header.count(b",") + 1, False
        if head != header:
            first = os.pread(fd, min(size, 4096), 0)
            newline = first.find(b"\n")
            line = first[: max(newline, 0)]
            if newline < 0 or not OTHER_HEADER_RE.match(line):
                raise self._mismatch(
                    'its header must be "%s": current value is %r'
                    % (header[:-1].decode(), head.split(b"\n")[0][:80].decode("utf-8", "replace"))
                )
            header_length, columns, changed = newline + 1, line.count(b",") + 1, True
        tail_length = min(size - header_length, TAIL_BYTES)
        tail = os.pread(fd, tail_length, size - tail_length)
        end, repaired = len(tail), 0
        if end > 0 and tail[-1:] != b"\n":
            last_newline = tail.rfind(b"\n")
            if last_newline < 0 and tail_length == TAIL_BYTES:
                raise self._mismatch("its last line is longer than %d bytes" % TAIL_BYTES)
            repaired = end - (last_newline + 1)
            end = last_newline + 1
            os.ftruncate(fd, size - repaired)
        last = None
        if end > 0:
            start = tail.rfind(b"\n", 0, end - 1) + 1
            if start == 0 and tail_length == TAIL_BYTES:
                raise self._mismatch("its last row is longer than %d bytes" % TAIL_BYTES)
            line = tail[start : end - 1]
            last = parse_row_ends(line, columns)
            if last is None:
                raise self._mismatch("its last row is not a reporter row: current value is %r" % line[:80])
        os.lseek(fd, 0, os.SEEK_END)
        return last, repaired, changed

    def rotate(self, old_epoch):
        """Moves the file aside as <stem>.epoch-<old_epoch><ext> (.epoch-<E>.1<ext>, .2, ... when
        taken) and starts an empty one with the header. Returns the aside name."""
        path = self.path
        slash, dot = path.rfind("/"), path.rfind(".")
        cut = dot if dot > slash else len(path)
        temp = "%s.%s.rotating-%d" % (path[: slash + 1], path[slash + 1 :], os.getpid())
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        new_fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        self._lock(new_fd)
        os.write(new_fd, self.header_line)
        mine = os.fstat(self.fd).st_ino
        n = 0
        while True:
            aside = "%s.epoch-%d%s%s" % (path[:cut], old_epoch, "" if n == 0 else ".%d" % n, path[cut:])
            try:
                there = os.lstat(aside).st_ino
            except FileNotFoundError:
                break
            if there == mine:
                break
            n += 1
        if not os.path.lexists(aside):
            os.link(path, aside)
        os.rename(temp, path)
        os.close(self.fd)
        self.fd = new_fd
        self.last = None
        return aside

    def append(self, data):
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as e:
            raise RptError(
                "Cannot write output file %s (%d of %d bytes written): %s" % (self.path, done, len(view), e.strerror),
                EXIT_OUTPUT,
            )

    def close(self):
        os.close(self.fd)


# ---- report ------------------------------------------------------------------------------------


def wait_for_segment(name, stopped, say):
    told = False
    while not stopped():
        try:
            return Segment.open(name)
        except NotReady:
            if not told:
                say("waiting for segment %s (start the writer)" % name)
                told = True
        time.sleep(0.05)
    return None


def reconcile(out, seg, stored, tag, say):
    """The reporter's start rules: rotate another schema's or epoch's file aside, refuse an
    impossible last seq (exit 8), resume at max(last seq + 1, read_ptr)."""
    write_ptr = seg.write_ptr()
    last = out.last
    if out.repaired:
        say("%s: removed a partial last line (%d bytes) from %s" % (tag, out.repaired, out.path))
    if out.schema_changed:
        aside = out.rotate(last[1] if last else 0)
        say("%s: %s was written under another schema; moved it to %s" % (tag, out.path, aside))
        last = None
    if last is not None and last[1] == seg.epoch:
        if last[0] + 1 > write_ptr:
            raise RptError(
                "Cannot resume %s as its last seq is %d but segment %s has write_ptr %d"
                % (out.path, last[0], seg.name, write_ptr),
                EXIT_OUTPUT_MISMATCH,
            )
        return max(last[0] + 1, stored)
    if last is not None:
        aside = out.rotate(last[1])
        say("%s: segment %s was re-created (epoch %d -> %d); moved the old rows to %s" % (tag, seg.name, last[1], seg.epoch, aside))
    return stored


def report(o):
    tag = "rpt_shm %d" % o.id
    say = (lambda line: None) if o.quiet else (lambda line: print(line, file=sys.stderr))
    stop = []
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, _frame: stop.append(signal.Signals(signum).name))
    seg = wait_for_segment(o.name, lambda: bool(stop), say)
    if seg is None:
        print("%s: stopped (%s) before segment %s appeared" % (tag, stop[0], o.name))
        return EXIT_OK

    def on_loss(start, end):
        print(
            "%s: lost entries %d..%d (%d): overwritten before they were read" % (tag, start, end - 1, end - start),
            file=sys.stderr,
        )

    with seg, Reader(seg, o.id, on_loss) as reader:
        out = OutputFile(o.out, csv_header(seg.fields))
        try:
            resume = reconcile(out, seg, reader.pos, tag, say)
            reader.commit_position(resume)
            say("%s: reading %s from seq %d into %s" % (tag, o.name, resume, o.out))
            epoch_tail = b",%d\n" % seg.epoch
            rows = 0
            last_beat = 0.0
            while not stop:
                now = time.monotonic()
                if now - last_beat >= 0.25:
                    reader.heartbeat()
                    last_beat = now
                before = reader.pos
                slots = reader.read_batch(o.batch)
                if slots:
                    out.append(b"".join(format_row(s, seg.fields, epoch_tail) for s in slots))
                    rows += len(slots)
                if reader.pos != before:
                    reader.commit()  # after the rows are written: read_ptr, then reader_lost
                elif o.until_caught_up:
                    break
                else:
                    time.sleep(0.001)
            reader.commit()
            print(
                "%s: wrote %d rows to %s; lost %d; read_ptr %d (%s)"
                % (tag, rows, o.out, reader.lost, reader.pos, stop[0] if stop else "caught up")
            )
        finally:
            out.close()
    return EXIT_OK


def parse_args(argv):
    p = argparse.ArgumentParser(prog="rpt_shm.py", description="A Python reader of the rpt ring.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="copy every new entry into a CSV file, as deno task reporter does")
    r.add_argument("id", type=int, help="reader id, 0 to 7")
    r.add_argument("--name", default="/rpt_sys_shm", help="segment name (default /rpt_sys_shm)")
    r.add_argument("--out", help="output file (default output_ID.csv)")
    r.add_argument("--batch", type=int, default=4096, help="most entries per write (default 4096)")
    r.add_argument("--until-caught-up", action="store_true", help="stop once everything up to write_ptr is read")
    r.add_argument("--quiet", action="store_true", help="no notices, only errors and the summary")
    o = p.parse_args(argv)
    if o.id < 0 or o.id > 7:
        raise RptError("Cannot start rpt_shm.py as reader id must be 0..7: current value is %d" % o.id, EXIT_USAGE)
    if o.batch < 1 or o.batch > 65536:
        raise RptError("Cannot start rpt_shm.py as --batch must be 1..65536: current value is %d" % o.batch, EXIT_USAGE)
    if o.out is None:
        o.out = "output_%d.csv" % o.id
    Segment.path_of(o.name)
    return o


def main(argv):
    try:
        return report(parse_args(argv))
    except RptError as e:
        print("rpt_shm.py: error: %s" % e, file=sys.stderr)
        return e.status
    except OSError as e:
        print("rpt_shm.py: error: %s" % e, file=sys.stderr)
        return EXIT_SYSTEM


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
