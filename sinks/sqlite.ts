/**
 * The reporter's SQLite sink (`deno task reporter ID --out orders.db`): every entry becomes one
 * row of a SQLite database, through `node:sqlite` (built into Deno: no dependency). The sink is
 * chosen by the output's extension: `.db`, `.sqlite` or `.sqlite3` ({@link isDatabasePath}).
 *
 * **Tables.**
 * - `entries`: the rows of the current schema. Columns `seq`, `timestamp_ns`, the schema's fields
 *   in order (named as the fields), `epoch`, then one `<field>_bits` column per float field (see
 *   below); primary key `(epoch, seq)`; a `STRICT` table (a rowid table: faster to append to
 *   here than `WITHOUT ROWID`, whose `PRAGMA integrity_check` SQLite 3.40 gets wrong when the
 *   key's columns are not the first ones). A new epoch of the same schema appends to it.
 * - `entries_epoch_<E>`: the rows of an earlier schema, renamed aside when a segment of another
 *   schema is read; `E` is the epoch of its last row (`_2`, `_3`, ... if that name is taken).
 *   Rows of two schemas never share a table.
 * - `rpt_schema(table_name, fingerprint, fields)`: the schema of each of those tables: its
 *   fingerprint (16 hex digits) and its fields as the writer's `--schema` JSON
 *   (`[{"name", "type", "scale"?}]`: the scale of a scaled decimal is read here).
 * - `rpt_position(segment, epoch, next_seq)`: one row, the reader's real position: the next seq to
 *   read of incarnation `epoch` of `segment`. It is committed in the same transaction as the rows,
 *   so a kill -9 leaves nothing to repair; on start it wins over `read_ptrs[ID]` (which only ever
 *   lags it).
 *
 * `STRICT` tables: any SQLite from 3.37 (2021) reads them.
 *
 * **Values**, typed and exact (every column `NOT NULL` except a float's value column):
 * | schema type | column | holds |
 * |---|---|---|
 * | `seq`, `timestamp_ns`, `epoch`, `u64` | INTEGER | the 64 bits as a signed integer: a value above 2^63 − 1 is stored as value − 2^64 (negative) |
 * | `u8` `u16` `u32` `i8` `i16` `i32` `i64` | INTEGER | the value |
 * | scaled (`scale` s > 0) | INTEGER | the stored units (value × 10^s), as above; s is in `rpt_schema` |
 * | `f32`, `f64` | REAL `<field>` + INTEGER `<field>_bits` | the value (f32 widened exactly), NULL for NaN, -0 reads as 0; the exact IEEE-754 bits (f64: as a signed 64-bit integer; f32: 0..2^32 − 1) |
 * | `char[N]` | TEXT | the bytes up to the last non-NUL byte (NUL padding dropped, inner NULs kept), byte b as code point b |
 * | `bytes[N]` | BLOB | the stored bytes (an empty BLOB for length 0) |
 *
 * Why a float has two columns: SQLite stores no NaN (it becomes NULL) and no sign of a zero in a
 * REAL column, and offers no SQL function that tells -0 from 0; so the REAL column is for queries
 * (NaN is NULL, which no comparison matches) and the bits column keeps the value exact. If a
 * schema also has a field named `<field>_bits`, the bits column takes one more `_` before `bits`.
 *
 * As numbers: a u64 is `CASE WHEN x < 0 THEN x + 18446744073709551616.0 ELSE x END` (a REAL,
 * rounded above 2^53); a scaled field is `x / 1e4` for scale 4 (a REAL). node:sqlite returns TEXT
 * only up to its first NUL: read a char column with inner NULs as `CAST(x AS BLOB)`.
 *
 * **The CSV text of every column**, as the reporter's CSV prints it: {@link csvSelectSql} gives
 * one SELECT for a schema (joined with commas, a result row is the CSV row); {@link csvTextSql}
 * the expression of one column. Exact for every type but floats, where it gives the shortest
 * decimal that reads back as the same double, formatted as JavaScript does; where two digit
 * strings of that length read back as the same double (a tie, or 17 digits), SQLite's printf may
 * end with the other last digit (about 2 % of the simulated writer's float values).
 *
 * **Durability.** WAL journal; the rows given since the last flush and the position are committed
 * in one transaction when the read loop flushes (every 10 ms while busy, at most every 1 ms once
 * caught up), and only then does `read_ptr` move. `--fsync none` (`synchronous = NORMAL`): a
 * commit survives a kill of the reporter (kill -9 included); an OS crash or power loss may lose
 * the commits of the last moments (rows and position together: the database stays consistent,
 * whole transactions only). `--fsync batch` (`synchronous = FULL`): the WAL is fsynced at every
 * commit, so every row `read_ptr` covers survives an OS crash or power loss too.
 *
 * **Sharing.** One reporter per database: the reporter holds an exclusive `flock` on the database
 * file for its whole life (as on a CSV file; SQLite's own locks are `fcntl` locks, a separate
 * kind), so a second one exits 6 naming the file. Any other process may read the database
 * meanwhile (WAL: readers never block the writer, and see whole commits).
 *
 * **Bad input** (nothing written, `read_ptr` not moved): a file that is not a SQLite database,
 * exit 8, and a table `entries` this sink did not make or whose columns were changed, exit 8
 * (the output does not match this reader, as a CSV file with a foreign header); a read-only file,
 * a full disk or any failed write, exit 5 (the output cannot be opened or written).
 *
 * @module
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { ExitCode, OutputError } from "../cli.ts";
import { BYTES_LENGTH_SIZE, SegmentInvalidError } from "../layout.ts";
import { defineSchema, type Field, type FieldSpec, type Schema } from "../schema.ts";
import type { Sink, SinkStart } from "./sink.ts";

/** The extensions that make the reporter write a SQLite database instead of a CSV file. */
export const DATABASE_EXTENSIONS: readonly string[] = [".db", ".sqlite", ".sqlite3"];

/**
 * Whether `path` names a SQLite database by its extension.
 *
 * @example
 * ```ts
 * import { isDatabasePath } from "./sqlite.ts";
 * console.assert(isDatabasePath("orders.db") && !isDatabasePath("orders.csv"));
 * ```
 */
export function isDatabasePath(path: string): boolean {
  const lower = path.toLowerCase();
  return DATABASE_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

/** Options of {@link SqliteSink} (and of {@link reporterSink}). */
export interface SqliteSinkOptions {
  /** The database file's path. */
  path: string;
  /** `none`: synchronous NORMAL; `batch`: synchronous FULL. */
  fsync: "none" | "batch";
  /** Prefix of notices, e.g. `reporter 3`. */
  tag: string;
}

/** One column of an entries table. */
export interface Column {
  /** Its name. */
  name: string;
  /** Its declared type: INTEGER, REAL, TEXT or BLOB. */
  type: "INTEGER" | "REAL" | "TEXT" | "BLOB";
  /** The field it comes from (none for seq, timestamp_ns and epoch). */
  field?: Field;
  /** For a float field: its value column (REAL) or its bits column. */
  part?: "value" | "bits";
}

/** The name of a float field's bits column: `<name>_bits`, with more `_` if a field has it. */
function bitsName(schema: Schema, f: Field): string {
  let name = `${f.name}_bits`;
  while (schema.fields.some((g) => g.name === name)) name = `${name.slice(0, -5)}__bits`;
  return name;
}

/**
 * The columns of the entries table of `schema`, in order.
 *
 * @example
 * ```ts
 * import { columnsOf } from "./sqlite.ts";
 * import { DEFAULT_SCHEMA } from "../schema.ts";
 * console.assert(columnsOf(DEFAULT_SCHEMA).map((c) => c.name).join() ===
 *   "seq,timestamp_ns,symbol,price,quantity,side,epoch");
 * ```
 */
export function columnsOf(schema: Schema): Column[] {
  const typeOf = (f: Field): Column["type"] =>
    f.kind === "char"
      ? "TEXT"
      : f.kind === "bytes"
      ? "BLOB"
      : f.kind === "float"
      ? "REAL"
      : "INTEGER";
  const floats = schema.fields.filter((f) => f.kind === "float");
  return [
    { name: "seq", type: "INTEGER" },
    { name: "timestamp_ns", type: "INTEGER" },
    ...schema.fields.map((f): Column => ({
      name: f.name,
      type: typeOf(f),
      field: f,
      ...(f.kind === "float" ? { part: "value" as const } : {}),
    })),
    { name: "epoch", type: "INTEGER" },
    ...floats.map((f): Column => ({
      name: bitsName(schema, f),
      type: "INTEGER",
      field: f,
      part: "bits",
    })),
  ];
}

/** `"name"`: an identifier quoted for SQL. */
function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** The CREATE TABLE statement of the entries table `table` of `schema`. */
function createTableSql(table: string, schema: Schema): string {
  const cols = columnsOf(schema).map((c) =>
    `${ident(c.name)} ${c.type}${c.part === "value" ? "" : " NOT NULL"}`
  );
  return `CREATE TABLE ${ident(table)} (${cols.join(", ")}, PRIMARY KEY ("epoch", "seq")) STRICT`;
}

/** The schema as stored in `rpt_schema.fields`. */
function fieldsJson(schema: Schema): string {
  return JSON.stringify(
    schema.fields.map((f) => ({
      name: f.name,
      type: f.type,
      ...(f.scale > 0 ? { scale: f.scale } : {}),
    })),
  );
}

/** 16 lowercase hex digits. */
function hex64(v: bigint): string {
  return v.toString(16).padStart(16, "0");
}

/** Rows per multi-row INSERT: one statement call per this many rows. */
const ROWS_PER_INSERT = 32;

const META_SQL = `
CREATE TABLE IF NOT EXISTS rpt_schema (table_name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
  fields TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS rpt_position (segment TEXT NOT NULL, epoch INTEGER NOT NULL,
  next_seq INTEGER NOT NULL) STRICT;`;

/** Reads one entry's fields into the argument array at `at`; returns the next free index. */
type Binder = (
  words: Uint32Array,
  bytes: Uint8Array,
  view: DataView,
  w: number,
  args: SQLInputValue[],
  at: number,
) => number;

/** The number of the 64-bit word at byte `b`: a number below 2^53 in magnitude, else a bigint. */
function int64At(words: Uint32Array, view: DataView, b: number): number | bigint {
  const lo = words[b >>> 2]!;
  const hi = words[(b >>> 2) + 1]!;
  if (hi < 0x200000) return hi * 4294967296 + lo;
  if (hi >= 0xffe00000) return (hi - 4294967296) * 4294967296 + lo;
  return view.getBigInt64(b, true);
}

/** A char[N] field's text: bytes to the last non-NUL one, each as the code point of its value. */
function charAt(bytes: Uint8Array, b: number, size: number): string {
  let end = size;
  while (end > 0 && bytes[b + end - 1] === 0) end--;
  return String.fromCharCode.apply(null, bytes.subarray(b, b + end) as unknown as number[]);
}

/** Reads one column's value of the entry at byte `b`. */
type Reader = (words: Uint32Array, bytes: Uint8Array, view: DataView, b: number) => SQLInputValue;

/** The reader of a float's value: NaN is NULL. */
function floatReader(o: number, size: number): Reader {
  if (size === 4) {
    return (_w, _bytes, view, b) => {
      const v = view.getFloat32(b + o, true);
      return v === v ? v : null;
    };
  }
  return (_w, _bytes, view, b) => {
    const v = view.getFloat64(b + o, true);
    return v === v ? v : null;
  };
}

/** The reader of a bytes[N] field: a view of its stored bytes; a length above N is damage. */
function bytesReader(f: Field): Reader {
  const o = f.offset;
  return (words, bytes, _view, b) => {
    const len = words[(b + o) >>> 2]!;
    if (len > f.maxLength) {
      throw new SegmentInvalidError(
        `Cannot use entry ${
          words[b >>> 2]! + words[(b >>> 2) + 1]! * 4294967296
        } as field ${f.name} length must be at most ${f.maxLength}: current value is ${len}`,
      );
    }
    const at = b + o + BYTES_LENGTH_SIZE;
    return bytes.subarray(at, at + len);
  };
}

/** The reader of column `c` (see the mapping in the module's documentation). */
function readerOf(c: Column, epoch: bigint): Reader {
  const f = c.field;
  if (f === undefined) {
    if (c.name === "epoch") {
      const bits = BigInt.asIntN(64, epoch);
      return () => bits;
    }
    const o = c.name === "seq" ? 0 : 8;
    return (words, _bytes, view, b) => int64At(words, view, b + o);
  }
  const o = f.offset;
  if (c.part === "bits" && f.size === 4) return (words, _b, _v, b) => words[(b + o) >>> 2]!;
  if (c.part === "bits") return (words, _bytes, view, b) => int64At(words, view, b + o);
  if (f.kind === "float") return floatReader(o, f.size);
  if (f.kind === "char") return (_w, bytes, _view, b) => charAt(bytes, b + o, f.size);
  if (f.kind === "bytes") return bytesReader(f);
  switch (f.type) {
    case "u8":
      return (_w, bytes, _view, b) => bytes[b + o]!;
    case "i8":
      return (_w, _bytes, view, b) => view.getInt8(b + o);
    case "u16":
      return (_w, _bytes, view, b) => view.getUint16(b + o, true);
    case "i16":
      return (_w, _bytes, view, b) => view.getInt16(b + o, true);
    case "u32":
      return (words, _bytes, _view, b) => words[(b + o) >>> 2]!;
    case "i32":
      return (words, _bytes, _view, b) => words[(b + o) >>> 2]! | 0;
    default: // u64, i64: the 64 bits as a signed integer
      return (words, _bytes, view, b) => int64At(words, view, b + o);
  }
}

/** The binder of the columns of `schema` for incarnation `epoch`. */
function makeBinder(schema: Schema, epoch: bigint): Binder {
  const readers = columnsOf(schema).map((c) => readerOf(c, epoch));
  return (words, bytes, view, w, args, at) => {
    const b = w * 4;
    for (let i = 0; i < readers.length; i++) args[at + i] = readers[i]!(words, bytes, view, b);
    return at + readers.length;
  };
}

/** The error of a SQLite call on the database at `path`: exit 5, or 8 for a foreign file. */
function dbError(path: string, doing: string, e: unknown): OutputError {
  if (e instanceof OutputError) return e;
  const message = (e as Error).message;
  if (/not a database|malformed/.test(message)) {
    return new OutputError(
      `Cannot use output database ${path} as it is not a SQLite database: ${message}`,
      ExitCode.OUTPUT_MISMATCH,
    );
  }
  return new OutputError(`Cannot ${doing} output database ${path}: ${message}`);
}

/** The position stored in `rpt_position`. */
interface StoredPosition {
  segment: string;
  epoch: bigint;
  nextSeq: number;
}

/** Rows into a SQLite database, the rows and the reader's position committed together. */
export class SqliteSink implements Sink {
  readonly unit = "rows";
  #o: SqliteSinkOptions;
  #lock: Deno.FsFile | undefined;
  #db: DatabaseSync | undefined;
  #insertMany: StatementSync | undefined;
  #insertOne: StatementSync | undefined;
  #bind: Binder | undefined;
  #many: SQLInputValue[] = [];
  #one: SQLInputValue[] = [];
  #segment = "";
  #epoch = 0n;
  #next = 0;
  #stride = 16;
  #update: StatementSync | undefined;
  /** The read loop's entries array (reused across writes) and its views. */
  #words: Uint32Array<ArrayBufferLike> = new Uint32Array(0);
  #bytes: Uint8Array<ArrayBufferLike> = new Uint8Array(0);
  #view: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));

  /** Prepares the sink; the database is opened by {@link start}. */
  constructor(options: SqliteSinkOptions) {
    this.#o = options;
  }

  /** The database's path. */
  get target(): string {
    return this.#o.path;
  }

  /**
   * Opens and locks the database (the first time), checks it, moves the entries of another
   * schema aside, and resumes after the position it holds.
   */
  start(at: SinkStart): Promise<number> {
    const path = this.#o.path;
    const db = this.#db ?? this.#open();
    let resume: number;
    try {
      db.exec("BEGIN IMMEDIATE");
      resume = this.#reconcile(db, at);
      db.exec("COMMIT");
    } catch (e) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw dbError(path, "prepare", e);
    }
    this.#prepare(db, at, resume);
    return Promise.resolve(resume);
  }

  /**
   * In the start's transaction: checks the tables and the position against the incarnation,
   * moves the rows of another schema aside, makes `entries` if needed, and stores the position
   * to resume at, which it returns.
   */
  #reconcile(db: DatabaseSync, at: SinkStart): number {
    const path = this.#o.path;
    const table = this.#tableSchema(db);
    const pos = this.#position(db);
    const fingerprint = hex64(at.schema.fingerprint);
    // No position of this epoch: start where --from says (read_ptr by default).
    let resume = at.initial;
    if (pos !== undefined && pos.segment !== at.name) {
      throw new OutputError(
        `Cannot use output database ${path} as it holds the entries of segment ${pos.segment}, not ${at.name}`,
        ExitCode.OUTPUT_MISMATCH,
      );
    }
    if (table !== undefined && table !== fingerprint) {
      const aside = this.#moveAside(db, pos?.epoch ?? 0n);
      at.say(`${this.#o.tag}: ${path} held entries of another schema; renamed them to ${aside}`);
    } else if (pos !== undefined && pos.epoch === at.epoch) {
      if (pos.nextSeq > at.writePtr) {
        throw new OutputError(
          `Cannot resume ${path} as its last seq is ${
            pos.nextSeq - 1
          } but segment ${at.name} has write_ptr ${at.writePtr}`,
          ExitCode.OUTPUT_MISMATCH,
        );
      }
      resume = Math.max(pos.nextSeq, at.stored);
      if (at.from !== undefined) {
        at.say(
          `${this.#o.tag}: ${path} holds entries up to seq ${
            pos.nextSeq - 1
          }: resuming after them (--from ${at.from} applies to an output with no position)`,
        );
      }
      if (resume !== at.stored) {
        at.say(
          `${this.#o.tag}: ${path} ends at seq ${resume - 1}; read_ptr ${at.stored} -> ${resume}`,
        );
      }
    } else if (pos !== undefined) {
      at.say(
        `${this.#o.tag}: segment ${at.name} was re-created (epoch ${pos.epoch} -> ${at.epoch}); appending to ${path} table entries`,
      );
    }
    if (table !== fingerprint) {
      db.exec(createTableSql("entries", at.schema));
      db.prepare("INSERT INTO rpt_schema VALUES ('entries', ?, ?)").run(
        fingerprint,
        fieldsJson(at.schema),
      );
    }
    db.exec("DELETE FROM rpt_position");
    db.prepare("INSERT INTO rpt_position VALUES (?, ?, ?)").run(
      at.name,
      BigInt.asIntN(64, at.epoch),
      resume,
    );
    return resume;
  }

  /** Opens and locks the database file, sets WAL and the synchronous level, makes the tables. */
  #open(): DatabaseSync {
    const path = this.#o.path;
    let lock: Deno.FsFile;
    try {
      const mode = statOrUndefined(path)?.mode ?? 0o666;
      if ((mode & 0o222) === 0) {
        throw new OutputError(
          `Cannot write output database ${path} as it is read-only: mode ${
            (mode & 0o777).toString(8)
          }`,
        );
      }
      lock = Deno.openSync(path, { read: true, write: true, create: true });
    } catch (e) {
      if (e instanceof OutputError) throw e;
      throw new OutputError(`Cannot open output database ${path}: ${(e as Error).message}`);
    }
    if (!lock.tryLockSync(true)) {
      lock.close();
      throw new OutputError(
        `Cannot write output database ${path} as another process holds its lock (one reporter per database)`,
        ExitCode.OWNERSHIP,
      );
    }
    // Held until close, after the database: closing any descriptor of the file drops the
    // process's fcntl locks on it, SQLite's own.
    this.#lock = lock;
    try {
      const db = new DatabaseSync(path);
      this.#db = db;
      db.exec("PRAGMA busy_timeout = 5000");
      // Read before anything is written: a file that is not a database, or a foreign table
      // entries, is refused untouched.
      this.#tableSchema(db);
      const mode = db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode: string };
      if (mode.journal_mode !== "wal") {
        throw new Error(`journal_mode must be wal: current value is ${mode.journal_mode}`);
      }
      db.exec(`PRAGMA synchronous = ${this.#o.fsync === "batch" ? "FULL" : "NORMAL"}`);
      db.exec(META_SQL);
      return db;
    } catch (e) {
      throw dbError(path, "open", e);
    }
  }

  /**
   * The fingerprint of table `entries` (from `rpt_schema`), undefined if there is none. Throws
   * (exit 8) when `entries` is not a table this sink made, or its columns were changed.
   */
  #tableSchema(db: DatabaseSync): string | undefined {
    const cols = db.prepare("SELECT name, type FROM pragma_table_info('entries')").all() as {
      name: string;
      type: string;
    }[];
    if (cols.length === 0) return undefined;
    const meta = db.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'rpt_schema'").get();
    const row = meta === undefined ? undefined : db.prepare(
      "SELECT fingerprint, fields FROM rpt_schema WHERE table_name = 'entries'",
    )
      .get() as { fingerprint: string; fields: string } | undefined;
    const have = cols.map((c) => `${c.name} ${c.type}`).join(", ");
    let want = "(none recorded in rpt_schema)";
    if (row !== undefined) {
      want = columnsFromJson(row.fields);
      if (want === have) return row.fingerprint;
    }
    throw new OutputError(
      `Cannot use output database ${this.#o.path} as its table entries must have columns ${want}: current value is ${have}`,
      ExitCode.OUTPUT_MISMATCH,
    );
  }

  /** The stored position, if any. */
  #position(db: DatabaseSync): StoredPosition | undefined {
    const query = db.prepare("SELECT segment, epoch, next_seq FROM rpt_position");
    query.setReadBigInts(true); // an epoch is a 64-bit value
    const row = query.get() as
      | { segment: string; epoch: number | bigint; next_seq: number | bigint }
      | undefined;
    if (row === undefined) return undefined;
    return {
      segment: row.segment,
      epoch: BigInt.asUintN(64, BigInt(row.epoch)),
      nextSeq: Number(row.next_seq),
    };
  }

  /** Renames `entries` to `entries_epoch_<epoch>` (numbered if taken); returns the new name. */
  #moveAside(db: DatabaseSync, epoch: bigint): string {
    const taken = db.prepare("SELECT 1 FROM sqlite_schema WHERE name = ?");
    let name = `entries_epoch_${epoch}`;
    for (let n = 2; taken.get(name) !== undefined; n++) name = `entries_epoch_${epoch}_${n}`;
    db.exec(`ALTER TABLE entries RENAME TO ${ident(name)}`);
    db.prepare("UPDATE rpt_schema SET table_name = ? WHERE table_name = 'entries'").run(name);
    return name;
  }

  /** Prepares the inserts and the binder of this incarnation. */
  #prepare(db: DatabaseSync, at: SinkStart, resume: number): void {
    const width = columnsOf(at.schema).length;
    const row = `(${new Array(width).fill("?").join(", ")})`;
    try {
      this.#insertMany = db.prepare(
        `INSERT INTO entries VALUES ${new Array(ROWS_PER_INSERT).fill(row).join(", ")}`,
      );
      this.#insertOne = db.prepare(`INSERT INTO entries VALUES ${row}`);
      this.#update = db.prepare("UPDATE rpt_position SET segment = ?, epoch = ?, next_seq = ?");
    } catch (e) {
      throw dbError(this.#o.path, "prepare", e);
    }
    this.#bind = makeBinder(at.schema, at.epoch);
    this.#many = new Array(width * ROWS_PER_INSERT).fill(null);
    this.#one = new Array(width).fill(null);
    this.#segment = at.name;
    this.#epoch = at.epoch;
    this.#next = resume;
    this.#stride = at.entrySize >>> 2;
  }

  /** Inserts the entries as rows, in the transaction the next {@link flush} commits. */
  write(entries: Uint32Array, count: number): void {
    const db = this.#db!;
    const bind = this.#bind!;
    if (entries !== this.#words) {
      this.#words = entries;
      this.#bytes = new Uint8Array(entries.buffer, entries.byteOffset, entries.byteLength);
      this.#view = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
    }
    const bytes = this.#bytes;
    const view = this.#view;
    const stride = this.#stride;
    try {
      if (!db.isTransaction) db.exec("BEGIN IMMEDIATE");
      let k = 0;
      const many = this.#many;
      for (; k + ROWS_PER_INSERT <= count; k += ROWS_PER_INSERT) {
        let at = 0;
        for (let r = 0; r < ROWS_PER_INSERT; r++) {
          at = bind(entries, bytes, view, (k + r) * stride, many, at);
        }
        this.#insertMany!.run(...many);
      }
      for (; k < count; k++) {
        bind(entries, bytes, view, k * stride, this.#one, 0);
        this.#insertOne!.run(...this.#one);
      }
    } catch (e) {
      if (e instanceof SegmentInvalidError) throw e;
      throw dbError(this.#o.path, "write", e);
    }
    if (count > 0) {
      const w = (count - 1) * stride;
      this.#next = entries[w]! + entries[w + 1]! * 4294967296 + 1;
    }
  }

  /** Nothing to record: the table has no row for a gap (the loop reports it on stderr). */
  lost(_from: number, _to: number): void {}

  /** Stores the position and commits it with the rows written since the last flush. */
  flush(): void {
    const db = this.#db!;
    if (!db.isTransaction) return;
    try {
      this.#update!.run(this.#segment, BigInt.asIntN(64, this.#epoch), this.#next);
      db.exec("COMMIT");
    } catch (e) {
      throw dbError(this.#o.path, "write", e);
    }
  }

  /** Rolls back what was not flushed, closes the database, then drops the lock. Idempotent. */
  close(): void {
    const db = this.#db;
    this.#db = undefined;
    try {
      if (db?.isOpen) {
        if (db.isTransaction) db.exec("ROLLBACK");
        db.close();
      }
    } finally {
      this.#lock?.close();
      this.#lock = undefined;
    }
  }
}

/** The columns text (`name TYPE, ...`) of the schema stored as JSON in `rpt_schema.fields`. */
function columnsFromJson(json: string): string {
  // Rebuilt through the schema's own layout, so the columns are computed as for a live schema.
  const specs = JSON.parse(json) as FieldSpec[];
  return columnsOf(defineSchema(specs)).map((c) => `${c.name} ${c.type}`).join(", ");
}

function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

// ---- The SQL that gives back the reporter's CSV text of every column.

/** The decimal text of the 64 bits of INTEGER `x` read as unsigned (a u64, seq, epoch). */
function u64TextSql(x: string): string {
  // x < 0 holds x + 2^64 = 2h + (x & 1), h = x >>> 1: its decimal is h / 5, then 2 (h % 5) + bit.
  const h = `((${x} >> 1) & 9223372036854775807)`;
  return `CASE WHEN ${x} >= 0 THEN CAST(${x} AS TEXT) ELSE CAST(${h} / 5 AS TEXT) || ` +
    `CAST(${h} % 5 * 2 + (${x} & 1) AS TEXT) END`;
}

/** `digits` (text, no sign) with a decimal point `scale` digits from the right, zero-padded. */
function scaledTextSql(sign: string, digits: string, scale: number): string {
  const zeros = "0".repeat(scale);
  return `(SELECT ${sign} || substr(p, 1, length(p) - ${scale}) || '.' || substr(p, -${scale}) ` +
    `FROM (SELECT substr('${zeros}' || d, -max(length(d), ${scale + 1})) AS p ` +
    `FROM (SELECT ${digits} AS d)))`;
}

/** Twenty-one zeros: the most a float's text pads with. */
const ZEROS = "0".repeat(21);

/**
 * The shortest `%e` text of the REAL `x > 0` (finite) that reads back as `x`: 1 to 16 significant
 * digits from printf, else 17 with the `!` flag (its last digit moved by one if that is what
 * reads back as `x`).
 */
function shortestSql(x: string): string {
  const tries: string[] = [];
  for (let p = 0; p < 16; p++) {
    tries.push(
      `CASE WHEN CAST(printf('%.${p}e', ${x}) AS REAL) = ${x} THEN printf('%.${p}e', ${x}) END`,
    );
  }
  // 17 digits: printf's last digit may be off by one at the ends of the range (1.79...e308).
  const s17 = `printf('%!.16e', ${x})`;
  const nudged = (by: number) =>
    `(SELECT CASE WHEN CAST(t AS REAL) = ${x} THEN t END FROM (SELECT ` +
    `substr(s, 1, instr(s, 'e') - 2) || (CAST(substr(s, instr(s, 'e') - 1, 1) AS INTEGER) ` +
    `${by > 0 ? "+" : "-"} 1) || substr(s, instr(s, 'e')) AS t FROM (SELECT ${s17} AS s) ` +
    `WHERE substr(s, instr(s, 'e') - 1, 1) NOT IN ('${by > 0 ? "9" : "0"}', '.')))`;
  tries.push(`CASE WHEN CAST(${s17} AS REAL) = ${x} THEN ${s17} END`, nudged(1), nudged(-1));
  return `coalesce(${tries.join(", ")}, ${s17})`;
}

/** JavaScript's number-to-string of the finite non-zero REAL `v` (its sign apart). */
function jsNumberSql(v: string): string {
  // s: d.ddde±NN; d: its digits; n: the place of the decimal point (JavaScript's n); k: digits.
  const body = `CASE WHEN k <= n AND n <= 21 THEN d || substr('${ZEROS}', 1, n - k) ` +
    `WHEN 0 < n AND n <= 21 THEN substr(d, 1, n) || '.' || substr(d, n + 1) ` +
    `WHEN -6 < n AND n <= 0 THEN '0.' || substr('${ZEROS}', 1, -n) || d ` +
    `ELSE substr(d, 1, 1) || CASE WHEN k > 1 THEN '.' || substr(d, 2) ELSE '' END || 'e' || ` +
    `CASE WHEN n > 0 THEN '+' ELSE '-' END || abs(n - 1) END`;
  return `(SELECT ${body} FROM (SELECT d, n, length(d) AS k FROM (SELECT ` +
    `rtrim(replace(substr(s, 1, instr(s, 'e') - 1), '.', ''), '0') AS d, ` +
    `CAST(substr(s, instr(s, 'e') + 1) AS INTEGER) + 1 AS n ` +
    `FROM (SELECT ${shortestSql(`abs(${v})`)} AS s))))`;
}

/** The CSV text of a float field from its value column `v` and bits column `bits`. */
function floatTextSql(v: string, bits: string, size: number): string {
  const [negZero, expMask, signMask] = size === 4
    ? ["2147483648", "2139095040", "2147483647"]
    : ["-9223372036854775808", "9218868437227405312", "9223372036854775807"];
  return `CASE WHEN ${bits} = ${negZero} THEN '-0' ` +
    `WHEN (${bits} & ${signMask}) > ${expMask} THEN 'NaN' ` +
    `WHEN ${v} = 9e999 THEN 'Infinity' WHEN ${v} = -9e999 THEN '-Infinity' ` +
    `WHEN ${v} = 0 THEN '0' ` +
    `ELSE CASE WHEN ${v} < 0 THEN '-' ELSE '' END || ${jsNumberSql(v)} END`;
}

/** The CSV text of a char[N] column `t`: to the first NUL, CR and LF as `?`, quoted per RFC 4180. */
function charTextSql(t: string): string {
  const cut = `CASE WHEN instr(${t}, char(0)) > 0 THEN substr(${t}, 1, instr(${t}, char(0)) - 1) ` +
    `ELSE ${t} END`;
  return `(SELECT CASE WHEN instr(r, ',') > 0 OR instr(r, '"') > 0 ` +
    `THEN '"' || replace(r, '"', '""') || '"' ELSE r END ` +
    `FROM (SELECT replace(replace(${cut}, char(10), '?'), char(13), '?') AS r))`;
}

/** The base64 (RFC 4648, `=` padding) of BLOB column `b`: a recursive CTE over 3-byte groups. */
function base64Sql(b: string): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const nibble = (at: string) => `(instr('0123456789ABCDEF', substr(h, ${at}, 1)) - 1)`;
  const byte = (j: number) =>
    `(${nibble(`2 * (i + ${j}) + 1`)} * 16 + ${nibble(`2 * (i + ${j}) + 2`)})`;
  const n = `(${byte(0)} * 65536 + ${byte(1)} * 256 + ${byte(2)})`;
  const char = (shift: number) => `substr('${alphabet}', ((${n} >> ${shift}) & 63) + 1, 1)`;
  const group = `${char(18)} || ${char(12)} || ` +
    `CASE WHEN i + 1 < length(${b}) THEN ${char(6)} ELSE '=' END || ` +
    `CASE WHEN i + 2 < length(${b}) THEN ${char(0)} ELSE '=' END`;
  return `(WITH RECURSIVE g(i, h, out) AS (SELECT 0, hex(${b}), '' UNION ALL ` +
    `SELECT i + 3, h, out || ${group} FROM g WHERE i < length(${b})) ` +
    `SELECT out FROM g ORDER BY i DESC LIMIT 1)`;
}

/**
 * The SQL expression giving the reporter's CSV text of column `c` of the entries table of
 * `schema` (a column of {@link columnsOf}; not a bits column), its columns read from table
 * alias `t`.
 *
 * @example
 * ```ts
 * import { columnsOf, csvTextSql } from "./sqlite.ts";
 * import { DEFAULT_SCHEMA } from "../schema.ts";
 * console.assert(csvTextSql(DEFAULT_SCHEMA, columnsOf(DEFAULT_SCHEMA)[4]!).startsWith("(SELECT"));
 * ```
 */
export function csvTextSql(schema: Schema, c: Column, t = "t"): string {
  const x = `${t}.${ident(c.name)}`;
  const f = c.field;
  if (f === undefined) return u64TextSql(x);
  if (f.kind === "char") return charTextSql(x);
  if (f.kind === "bytes") return base64Sql(x);
  if (f.kind === "float") return floatTextSql(x, `${t}.${ident(bitsName(schema, f))}`, f.size);
  const unsigned = f.type === "u64";
  if (f.scale === 0) return unsigned ? u64TextSql(x) : `CAST(${x} AS TEXT)`;
  if (unsigned) return scaledTextSql("''", u64TextSql(x), f.scale);
  return scaledTextSql(
    `CASE WHEN ${x} < 0 THEN '-' ELSE '' END`,
    `ltrim(CAST(${x} AS TEXT), '-')`,
    f.scale,
  );
}

/**
 * A SELECT giving, for every row of `table` (default `entries`) in seq order, the reporter's CSV
 * columns as text, named as in the CSV header: joined with commas, a result row is the CSV row.
 *
 * @example
 * ```ts
 * import { csvSelectSql } from "./sqlite.ts";
 * import { DEFAULT_SCHEMA } from "../schema.ts";
 * console.assert(csvSelectSql(DEFAULT_SCHEMA).endsWith('FROM "entries" AS t ORDER BY t.epoch, t.seq'));
 * ```
 */
export function csvSelectSql(schema: Schema, table = "entries"): string {
  const cols = columnsOf(schema).filter((c) => c.part !== "bits");
  return `SELECT ${
    cols.map((c) => `${csvTextSql(schema, c)} AS ${ident(c.name)}`).join(",\n  ")
  }\nFROM ${ident(table)} AS t ORDER BY t.epoch, t.seq`;
}
