/**
 * The reporter's sink: CSV rows appended to a file ({@link OutputFile}), the file's last row being
 * where the reader's position really lives. Rows of one incarnation of the segment never share a
 * file with another's: the old file is moved aside as `<stem>.epoch-<epoch><ext>`.
 *
 * @module
 */
import { ExitCode, OutputError } from "../cli.ts";
import {
  CSV_HEADER,
  csvHeader,
  formatRows,
  makeFormatter,
  maxRowBytes,
  type RowFormatter,
} from "../csv.ts";
import { type LastRow, OutputFile } from "../output.ts";
import type { Sink, SinkStart } from "./sink.ts";

/** Options of {@link CsvFileSink}. */
export interface CsvFileSinkOptions {
  /** The output file's path. */
  path: string;
  /** `batch`: fdatasync before read_ptr advances. */
  fsync: "none" | "batch";
  /** Most entries per {@link CsvFileSink.write} call (sizes the text buffer). */
  batch: number;
  /** Prefix of notices, e.g. `reporter 3`. */
  tag: string;
  /** Whether the reader has a `read_ptr` to report moving on start (not `follow.ts`). */
  readPtr?: boolean;
}

/** CSV rows into one file, one row per entry, `fsync`ed per commit with `--fsync batch`. */
export class CsvFileSink implements Sink {
  readonly unit = "rows";
  #o: CsvFileSinkOptions;
  #out: OutputFile | undefined;
  #epochTail = new Uint8Array(0);
  #text: Uint8Array;
  /** The header row the open file was checked against (the schema's). */
  #header = CSV_HEADER;
  /** Whether {@link start} has run: a later start reads the file again under its lock. */
  #started = false;
  /** Built once per incarnation from its schema; the default schema's until then. */
  #format: RowFormatter = formatRows;

  /** Prepares the sink; the file is opened by {@link start}. */
  constructor(options: CsvFileSinkOptions) {
    this.#o = options;
    this.#text = new Uint8Array(0);
  }

  /** The output file's path. */
  get target(): string {
    return this.#o.path;
  }

  /**
   * Opens and locks the file (the first time; a later incarnation reads it again under the lock it
   * still holds), repairs a torn last line, rotates it on a new epoch or schema, and resumes after
   * its last row.
   */
  start(at: SinkStart): Promise<number> {
    const o = this.#o;
    // The segment's schema fixes the header and the row format: one formatter per incarnation.
    const header = csvHeader(at.schema);
    if (this.#out === undefined) {
      this.#out = OutputFile.open(o.path, header);
    } else if (this.#started || header !== this.#header) {
      this.#out.refresh(header);
    }
    this.#header = header;
    this.#started = true;
    this.#format = makeFormatter(at.schema, at.entrySize);
    const out = this.#out;
    if (out.state.repairedBytes > 0) {
      at.say(
        `${o.tag}: removed a partial last line (${out.state.repairedBytes} bytes) from ${o.path}`,
      );
    }
    // The output file is the truth; read_ptr may lag it by one batch after a crash. A file with
    // no row of this epoch holds no position: start where --from says (read_ptr by default).
    let resume = at.initial;
    let last = out.state.last;
    if (out.state.schemaChanged) {
      const aside = out.rotate(last?.epoch ?? 0n);
      at.say(`${o.tag}: ${o.path} was written under another schema; moved it to ${aside}`);
      last = undefined;
    }
    if (last !== undefined && last.epoch === at.epoch) {
      if (last.seq + 1 > at.writePtr) {
        throw new OutputError(
          `Cannot resume ${o.path} as its last seq is ${last.seq} but segment ${at.name} has write_ptr ${at.writePtr}`,
          ExitCode.OUTPUT_MISMATCH,
        );
      }
      resume = Math.max(last.seq + 1, at.stored);
      if (at.from !== undefined) {
        at.say(
          `${o.tag}: ${o.path} holds rows up to seq ${last.seq}: resuming after them (--from ${at.from} applies to an output with no position)`,
        );
      }
      if (resume !== at.stored && o.readPtr !== false) {
        at.say(`${o.tag}: ${o.path} ends at seq ${resume - 1}; read_ptr ${at.stored} -> ${resume}`);
      }
    } else if (last !== undefined) {
      const aside = out.rotate(last.epoch);
      at.say(
        `${o.tag}: segment ${at.name} was re-created (epoch ${last.epoch} -> ${at.epoch}); moved the old rows to ${aside}`,
      );
    }
    if (o.fsync === "batch") out.sync();
    this.#epochTail = new TextEncoder().encode(`,${at.epoch}\n`);
    this.#text = new Uint8Array(at.batch * (maxRowBytes(at.schema) + this.#epochTail.length));
    return Promise.resolve(resume);
  }

  /**
   * Opens the file (once; {@link start} reuses it), repairing a torn last line, and returns its
   * last complete row: where a reader whose source is not the ring (`follow.ts`) resumes.
   */
  lastRow(): LastRow | undefined {
    this.#out ??= OutputFile.open(this.#o.path, this.#header);
    return this.#out.state.last;
  }

  /** Formats the entries as rows and appends them in one write. */
  write(entries: Uint32Array, count: number): void {
    const text = this.#text;
    // The one place rows are formatted.
    const end = this.#format(entries, count, text, 0, this.#epochTail);
    this.#out!.append(text.subarray(0, end));
  }

  /** Nothing to record: a CSV has no row for a gap (the loop reports it on stderr). */
  lost(_from: number, _to: number): void {}

  /** fdatasync with `--fsync batch`; then checks the path still names this writable file. */
  flush(): void {
    const out = this.#out!;
    if (this.#o.fsync === "batch") out.sync();
    out.verify();
  }

  /** Closes the file. Idempotent. */
  close(): void {
    this.#out?.close();
  }
}
