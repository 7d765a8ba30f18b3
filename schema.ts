/**
 * The payload schema: what the payload bytes of an entry (offsets 0x10 to `entry_size`) hold, as
 * an ordered list of named, typed fields laid out with natural alignment. A segment stores its
 * schema in a self-describing block (see {@link encodeSchemaBlock} and `layout.ts`), so every
 * reader (the reporter, `status`, the C reader) learns the entry's shape from the segment itself.
 * A segment without a block holds the {@link DEFAULT_SCHEMA}: today's simulated engine entry.
 *
 * @module
 */
import {
  BYTES_LENGTH_SIZE,
  ENTRIES_OFFSET_OFFSET,
  ENTRY_SIZE,
  ENTRY_SIZE_OFFSET,
  HEADER_SIZE,
  MAX_ENTRY_SIZE,
  PAYLOAD_OFFSET,
  PAYLOAD_SIZE,
  SCHEMA_BLOCK_LENGTH_OFFSET,
  SCHEMA_BLOCK_OFFSET_OFFSET,
  SCHEMA_FIELD_SIZE,
  SCHEMA_FIELD_SIZE_V2,
  SCHEMA_FIELDS_OFFSET,
  SCHEMA_FINGERPRINT_OFFSET,
  SCHEMA_MAGIC,
  SCHEMA_NAME_SIZE,
  SCHEMA_TYPE_BYTES,
  SCHEMA_VERSION,
  SCHEMA_VERSION_2,
  SegmentInvalidError,
} from "./layout.ts";

/** The scalar field types, in the order of their type codes in the block (1..10; char is 11). */
export const SCALAR_TYPES: readonly ScalarType[] = [
  "u8",
  "u16",
  "u32",
  "u64",
  "i8",
  "i16",
  "i32",
  "i64",
  "f32",
  "f64",
];

/**
 * A scalar field type.
 *
 * @example
 * ```ts
 * import type { ScalarType } from "./schema.ts";
 * const t: ScalarType = "f64";
 * console.assert(t === "f64");
 * ```
 */
export type ScalarType =
  | "u8"
  | "u16"
  | "u32"
  | "u64"
  | "i8"
  | "i16"
  | "i32"
  | "i64"
  | "f32"
  | "f64";

/**
 * A field type: a scalar, `char[N]` (ASCII text, NUL-padded, 1 <= N <= entry_size - 16), or
 * `bytes[N]` (opaque bytes of any length from 0 to N, stored as a u32 length then N bytes).
 *
 * @example
 * ```ts
 * import type { FieldType } from "./schema.ts";
 * const t: FieldType = "char[8]";
 * const b: FieldType = "bytes[1000]";
 * console.assert(t.startsWith("char") && b.startsWith("bytes"));
 * ```
 */
export type FieldType = ScalarType | `char[${number}]` | `bytes[${number}]`;

/**
 * One field as declared (in JSON or TypeScript).
 *
 * @example
 * ```ts
 * import type { FieldSpec } from "./schema.ts";
 * const px: FieldSpec = { name: "px", type: "i64", scale: 2 };
 * console.assert(px.scale === 2);
 * ```
 */
export interface FieldSpec {
  /** `[a-z_][a-z0-9_]*`, at most 31 characters, unique, not `seq`, `timestamp_ns` or `epoch`. */
  name: string;
  /** One of `u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 char[N] bytes[N]`. */
  type: string;
  /** Integer types only: digits after the decimal point when printed, 0 to 18 (default 0). */
  scale?: number;
}

/**
 * The kind of a laid-out field: how it is stored and printed.
 *
 * @example
 * ```ts
 * import { DEFAULT_SCHEMA, type FieldKind } from "./schema.ts";
 * const kind: FieldKind = DEFAULT_SCHEMA.fields[0]!.kind;
 * console.assert(kind === "char");
 * ```
 */
export type FieldKind = "uint" | "int" | "float" | "char" | "bytes";

/**
 * One field of a validated schema, with its place in the entry.
 *
 * @example
 * ```ts
 * import { DEFAULT_SCHEMA } from "./schema.ts";
 * const price = DEFAULT_SCHEMA.fields[1]!;
 * console.assert(price.offset === 0x18 && price.size === 8 && price.scale === 4);
 * ```
 */
export interface Field {
  /** The field's name. */
  readonly name: string;
  /** Its type as declared, e.g. `i64` or `char[8]`. */
  readonly type: FieldType;
  /** uint, int, float, char or bytes. */
  readonly kind: FieldKind;
  /** Bytes it takes in the entry: 1, 2, 4, 8, N for `char[N]`, 4 + N for `bytes[N]`. */
  readonly size: number;
  /** The most bytes of its value: N for `char[N]` and `bytes[N]`, else {@link size}. */
  readonly maxLength: number;
  /** Digits after the decimal point (integers; 0 otherwise). */
  readonly scale: number;
  /** Byte offset within the entry, from 0x10. */
  readonly offset: number;
  /** Position in the schema, from 0. */
  readonly index: number;
  /**
   * Type code stored in the block: 1..10 for u8..f64 in {@link SCALAR_TYPES} order, 11 char,
   * 12 bytes.
   */
  readonly code: number;
}

/**
 * A validated schema: its fields laid out, its block bytes and their fingerprint.
 *
 * @example
 * ```ts
 * import { defineSchema } from "./schema.ts";
 * const s = defineSchema([{ name: "venue", type: "char[4]" }, { name: "px", type: "f64" }]);
 * console.assert(s.fields[1]!.offset === 0x18 && s.fingerprint !== 0n);
 * ```
 */
export interface Schema {
  /** The fields, in order. */
  readonly fields: readonly Field[];
  /** The schema block as stored in a segment (see {@link encodeSchemaBlock}). */
  readonly block: Uint8Array;
  /** 64-bit FNV-1a hash of {@link block}. */
  readonly fingerprint: bigint;
  /** Whether this is the default schema (stored as no block at all). */
  readonly isDefault: boolean;
  /** The block's version: 1 when every field fits a 64-byte entry and none is bytes, else 2. */
  readonly version: number;
  /** Byte offset in the entry just past the last field. */
  readonly end: number;
  /** The smallest entry size that holds it: a power of two from 64. */
  readonly minEntrySize: number;
}

/**
 * Raised for a schema that breaks a rule; the message names the field and the rule.
 *
 * @example
 * ```ts
 * import { defineSchema, SchemaError } from "./schema.ts";
 * try {
 *   defineSchema([{ name: "seq", type: "u8" }]);
 * } catch (e) {
 *   console.assert(e instanceof SchemaError && e.message.includes("field seq"));
 * }
 * ```
 */
export class SchemaError extends Error {
  /**
   * Makes the error; `message` names the field and the rule it breaks.
   *
   * @example
   * ```ts
   * import { SchemaError } from "./schema.ts";
   * console.assert(new SchemaError("x").name === "SchemaError");
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "SchemaError";
  }
}

const NAME_RE = /^[a-z_][a-z0-9_]*$/;
const RESERVED_NAMES = new Set(["seq", "timestamp_ns", "epoch"]);
const CHAR_CODE = 11;
/** Payload bytes of the largest entry: where every field must end. */
const MAX_PAYLOAD = MAX_ENTRY_SIZE - PAYLOAD_OFFSET;
const SIZES: Record<ScalarType, number> = {
  u8: 1,
  u16: 2,
  u32: 4,
  u64: 8,
  i8: 1,
  i16: 2,
  i32: 4,
  i64: 8,
  f32: 4,
  f64: 8,
};

function kindOf(type: ScalarType): FieldKind {
  return type[0] === "u" ? "uint" : type[0] === "i" ? "int" : "float";
}

/** How a declared type is stored: its kind, block code, bytes taken, value bytes, alignment. */
interface TypeInfo {
  kind: FieldKind;
  code: number;
  size: number;
  maxLength: number;
  align: number;
}

/** The storage of type `type` of field `name`, or a SchemaError naming the type. */
function typeInfo(name: string, type: unknown): TypeInfo {
  const sized = typeof type === "string" ? /^(char|bytes)\[(\d{1,5})\]$/.exec(type) : null;
  if (sized !== null) {
    const n = Number(sized[2]);
    const isChar = sized[1] === "char";
    const max = isChar ? MAX_PAYLOAD : MAX_PAYLOAD - BYTES_LENGTH_SIZE;
    if (n < 1 || n > max || sized[2]!.startsWith("0")) {
      throw new SchemaError(
        `Cannot use schema as field ${name} has ${
          sized[1]
        }[N] with N out of 1..${max}: current value is ${JSON.stringify(type)}`,
      );
    }
    return isChar ? { kind: "char", code: CHAR_CODE, size: n, maxLength: n, align: 1 } : {
      kind: "bytes",
      code: SCHEMA_TYPE_BYTES,
      size: BYTES_LENGTH_SIZE + n,
      maxLength: n,
      align: BYTES_LENGTH_SIZE,
    };
  }
  if (typeof type === "string" && (SCALAR_TYPES as readonly string[]).includes(type)) {
    const size = SIZES[type as ScalarType];
    return {
      kind: kindOf(type as ScalarType),
      code: SCALAR_TYPES.indexOf(type as ScalarType) + 1,
      size,
      maxLength: size,
      align: size,
    };
  }
  throw new SchemaError(
    `Cannot use schema as field ${name} has an unknown type (one of u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 char[N] bytes[N]): current value is ${
      describe(type)
    }`,
  );
}

/**
 * Validates `specs` and lays the fields out in order with natural alignment from payload byte 0
 * (entry offset 0x10). The fields may take up to 65,520 bytes, the payload of the largest entry;
 * a segment checks that they fit its own entry size ({@link checkSchemaFits}). Throws a
 * {@link SchemaError} naming the field and the rule it breaks.
 *
 * @example
 * ```ts
 * import { defineSchema } from "./schema.ts";
 * const schema = defineSchema([
 *   { name: "venue", type: "char[4]" },
 *   { name: "px", type: "i64", scale: 2 },
 *   { name: "qty", type: "u32" },
 *   { name: "blob", type: "bytes[100]" },
 * ]);
 * console.assert(schema.fields.map((f) => f.offset).join() === "16,24,32,36");
 * console.assert(schema.end === 140 && schema.minEntrySize === 256 && schema.version === 2);
 * ```
 */
export function defineSchema(specs: readonly FieldSpec[]): Schema {
  return build(layoutFields(specs));
}

/** The fields of `specs`, checked and laid out (see {@link defineSchema}). */
function layoutFields(specs: readonly FieldSpec[]): Field[] {
  if (!Array.isArray(specs)) {
    throw new SchemaError(
      `Cannot use schema as it must be a list of fields: current value is ${describe(specs)}`,
    );
  }
  if (specs.length === 0) {
    throw new SchemaError("Cannot use schema as it must have at least one field: it has none");
  }
  const seen = new Set<string>();
  const fields: Field[] = [];
  let offset = PAYLOAD_OFFSET;
  specs.forEach((spec, index) => {
    const name = checkSpec(spec, index, seen);
    const { kind, code, size, maxLength, align } = typeInfo(name, spec.type);
    const scale = scaleOf(spec, name, kind);
    offset = Math.ceil(offset / align) * align;
    if (offset + size > MAX_ENTRY_SIZE) {
      throw new SchemaError(
        `Cannot use schema as field ${name} ends at payload byte ${
          offset + size - PAYLOAD_OFFSET
        } with natural alignment: the fields must fit in ${MAX_PAYLOAD} bytes (a 65536-byte entry)`,
      );
    }
    const type = spec.type as FieldType;
    fields.push({ name, type, kind, size, maxLength, scale, offset, index, code });
    offset += size;
  });
  return fields;
}

/** Checks field `index`'s shape and name; returns the name. */
function checkSpec(spec: FieldSpec, index: number, seen: Set<string>): string {
  const where = `field ${index}`;
  if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
    throw new SchemaError(
      `Cannot use schema as ${where} must be an object with name and type: current value is ${
        describe(spec)
      }`,
    );
  }
  for (const key of Object.keys(spec)) {
    if (key !== "name" && key !== "type" && key !== "scale") {
      throw new SchemaError(
        `Cannot use schema as ${where} has an unknown key (only name, type, scale): current value is ${
          JSON.stringify(key)
        }`,
      );
    }
  }
  const name = spec.name;
  if (typeof name !== "string" || !NAME_RE.test(name) || name.length > 31) {
    throw new SchemaError(
      `Cannot use schema as ${where} name must match [a-z_][a-z0-9_]* with at most 31 characters: current value is ${
        describe(name)
      }`,
    );
  }
  if (RESERVED_NAMES.has(name)) {
    throw new SchemaError(
      `Cannot use schema as field ${name} has a reserved name (seq, timestamp_ns and epoch are columns of every row): current value is ${
        JSON.stringify(name)
      }`,
    );
  }
  if (seen.has(name)) {
    throw new SchemaError(
      `Cannot use schema as field ${name} is declared twice: names must be unique`,
    );
  }
  seen.add(name);
  return name;
}

/** The scale of `spec` (0 when absent); only integer types take one. */
function scaleOf(spec: FieldSpec, name: string, kind: FieldKind): number {
  if (spec.scale === undefined) return 0;
  if (kind !== "uint" && kind !== "int") {
    throw new SchemaError(
      `Cannot use schema as field ${name} has a scale but only integer types take one: type is ${spec.type}`,
    );
  }
  if (!Number.isInteger(spec.scale) || spec.scale < 0 || spec.scale > 18) {
    throw new SchemaError(
      `Cannot use schema as field ${name} scale must be an integer from 0 to 18: current value is ${
        describe(spec.scale)
      }`,
    );
  }
  return spec.scale;
}

/** Whether version 1 of the block describes `fields`: all end by 0x40, none is bytes. */
function fitsVersion1(fields: readonly Field[]): boolean {
  return fields.every((f) => f.code !== SCHEMA_TYPE_BYTES && f.offset + f.size <= ENTRY_SIZE);
}

function build(fields: Field[], version = fitsVersion1(fields) ? SCHEMA_VERSION : 2): Schema {
  const block = encodeFields(fields, version);
  const fingerprint = fingerprint64(block);
  const isDefault = defaultBlock.bytes === undefined || equalBytes(block, defaultBlock.bytes);
  const last = fields[fields.length - 1]!;
  const end = last.offset + last.size;
  let minEntrySize = ENTRY_SIZE;
  while (minEntrySize < end) minEntrySize *= 2;
  return Object.freeze({
    fields: Object.freeze(fields.map((f) => Object.freeze(f))),
    block,
    fingerprint,
    isDefault,
    version,
    end,
    minEntrySize,
  });
}

/**
 * Checks that `schema`'s fields fit entries of `entrySize` bytes; throws a {@link SchemaError}
 * naming both values otherwise.
 *
 * @example
 * ```ts
 * import { checkSchemaFits, defineSchema } from "./schema.ts";
 * const s = defineSchema([{ name: "blob", type: "bytes[100]" }]);
 * checkSchemaFits(s, 256);
 * try {
 *   checkSchemaFits(s, 64);
 * } catch (e) {
 *   console.assert((e as Error).message.includes("entry size 64"));
 * }
 * ```
 */
export function checkSchemaFits(schema: Schema, entrySize: number): void {
  if (schema.end > entrySize) {
    const last = schema.fields[schema.fields.length - 1]!;
    throw new SchemaError(
      `Cannot use schema as its fields take ${
        schema.end - PAYLOAD_OFFSET
      } payload bytes (field ${last.name} ends at entry byte ${schema.end}) but entry size ${entrySize} holds ${
        entrySize - PAYLOAD_OFFSET
      }: use an entry size of at least ${schema.minEntrySize}`,
    );
  }
}

function describe(v: unknown): string {
  if (v === undefined) return "missing";
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Parses a schema from JSON text: either a list of fields, or `{ "fields": [...] }`. Throws a
 * {@link SchemaError}.
 *
 * @example
 * ```ts
 * import { parseSchemaJson } from "./schema.ts";
 * const s = parseSchemaJson('[{"name":"qty","type":"u32"}]');
 * console.assert(s.fields[0]!.name === "qty");
 * ```
 */
export function parseSchemaJson(text: string): Schema {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new SchemaError(`Cannot use schema as it is not valid JSON: ${(e as Error).message}`);
  }
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length !== 1 || keys[0] !== "fields") {
      throw new SchemaError(
        `Cannot use schema as it must be a list of fields or {"fields": [...]}: current keys are ${
          JSON.stringify(keys)
        }`,
      );
    }
    value = (value as { fields: unknown }).fields;
  }
  return defineSchema(value as FieldSpec[]);
}

/** The block bytes of `fields` in block `version` (see layout.ts, byte by byte). */
function encodeFields(fields: readonly Field[], version: number): Uint8Array {
  const record = version === SCHEMA_VERSION ? SCHEMA_FIELD_SIZE : SCHEMA_FIELD_SIZE_V2;
  const block = new Uint8Array(SCHEMA_FIELDS_OFFSET + fields.length * record);
  const v = new DataView(block.buffer);
  v.setUint32(0, SCHEMA_MAGIC, true);
  v.setUint16(4, version, true);
  v.setUint16(6, fields.length, true);
  fields.forEach((f, i) => {
    const at = SCHEMA_FIELDS_OFFSET + i * record;
    for (let k = 0; k < f.name.length; k++) block[at + k] = f.name.charCodeAt(k);
    block[at + SCHEMA_NAME_SIZE] = f.code;
    if (version === SCHEMA_VERSION) {
      block[at + SCHEMA_NAME_SIZE + 1] = f.size;
      block[at + SCHEMA_NAME_SIZE + 2] = f.scale;
      block[at + SCHEMA_NAME_SIZE + 3] = f.offset;
    } else {
      block[at + SCHEMA_NAME_SIZE + 1] = f.scale;
      v.setUint32(at + SCHEMA_NAME_SIZE + 4, f.size, true);
      v.setUint32(at + SCHEMA_NAME_SIZE + 8, f.offset, true);
    }
  });
  return block;
}

/**
 * The block bytes of `schema`: what {@link Segment.create} stores between 0x180 and
 * `entries_offset`. Version 1 when every field ends by entry byte 0x40 and none is `bytes[N]`,
 * else version 2; `layout.ts` gives both byte by byte.
 *
 * @example
 * ```ts
 * import { decodeSchemaBlock, defineSchema, encodeSchemaBlock } from "./schema.ts";
 * const s = defineSchema([{ name: "qty", type: "u32" }]);
 * console.assert(decodeSchemaBlock(encodeSchemaBlock(s)).fingerprint === s.fingerprint);
 * ```
 */
export function encodeSchemaBlock(schema: Schema): Uint8Array {
  return schema.block.slice();
}

/**
 * Decodes and validates block bytes of version 1 or 2 (as stored in a segment or sent by a
 * sink). Reads nothing outside `bytes`. Every byte is checked: the result re-encodes, in the
 * same version, to exactly `bytes`. Throws a {@link SchemaError} naming what is wrong.
 *
 * @example
 * ```ts
 * import { decodeSchemaBlock, DEFAULT_SCHEMA } from "./schema.ts";
 * console.assert(decodeSchemaBlock(DEFAULT_SCHEMA.block).isDefault);
 * ```
 */
export function decodeSchemaBlock(bytes: Uint8Array): Schema {
  const fail = (what: string): never => {
    throw new SchemaError(`schema block ${what}`);
  };
  if (bytes.length < SCHEMA_FIELDS_OFFSET) {
    fail(`must be at least ${SCHEMA_FIELDS_OFFSET} bytes: current length is ${bytes.length}`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = v.getUint32(0, true);
  if (magic !== SCHEMA_MAGIC) {
    fail(`magic must be 0x48435352: current value is 0x${magic.toString(16).padStart(8, "0")}`);
  }
  const version = v.getUint16(4, true);
  if (version !== SCHEMA_VERSION && version !== SCHEMA_VERSION_2) {
    fail(`version must be 1 or 2: current value is ${version}`);
  }
  const v1 = version === SCHEMA_VERSION;
  const count = v.getUint16(6, true);
  const maxCount = v1 ? PAYLOAD_SIZE : MAX_PAYLOAD;
  if (count < 1 || count > maxCount) {
    fail(`field_count must be 1..${maxCount}: current value is ${count}`);
  }
  const record = v1 ? SCHEMA_FIELD_SIZE : SCHEMA_FIELD_SIZE_V2;
  const expected = SCHEMA_FIELDS_OFFSET + count * record;
  if (bytes.length !== expected) {
    fail(
      `length must be 8 + ${record} x field_count = ${expected} bytes: current length is ${bytes.length}`,
    );
  }
  const specs: FieldSpec[] = [];
  for (let i = 0; i < count; i++) {
    const at = SCHEMA_FIELDS_OFFSET + i * record;
    let name = "";
    for (let k = 0; k < SCHEMA_NAME_SIZE && bytes[at + k] !== 0; k++) {
      const c = bytes[at + k]!;
      if (c >= 0x80) fail(`field ${i} name must be ASCII: byte ${k} is 0x${c.toString(16)}`);
      name += String.fromCharCode(c);
    }
    const code = bytes[at + SCHEMA_NAME_SIZE]!;
    const size = v1
      ? bytes[at + SCHEMA_NAME_SIZE + 1]!
      : v.getUint32(at + SCHEMA_NAME_SIZE + 4, true);
    const scale = bytes[at + SCHEMA_NAME_SIZE + (v1 ? 2 : 1)]!;
    let type: string;
    if (code >= 1 && code <= SCALAR_TYPES.length) type = SCALAR_TYPES[code - 1]!;
    else if (code === CHAR_CODE) type = `char[${size}]`;
    else if (code === SCHEMA_TYPE_BYTES && !v1) type = `bytes[${size - BYTES_LENGTH_SIZE}]`;
    else fail(`field ${i} type code must be 1..${v1 ? 11 : 12}: current value is ${code}`);
    const spec: FieldSpec = { name, type: type! };
    if (scale !== 0) spec.scale = scale;
    specs.push(spec);
  }
  let schema: Schema;
  try {
    schema = build(layoutFields(specs), version);
  } catch (e) {
    return fail(`is invalid: ${(e as Error).message.replace("Cannot use schema as ", "")}`);
  }
  if (v1 && !fitsVersion1(schema.fields)) {
    const last = schema.fields[schema.fields.length - 1]!; // version 1 holds no bytes[N]
    fail(
      `version 1 must describe fields within a 64-byte entry: field ${last.name} ends at entry byte ${schema.end}`,
    );
  }
  if (!equalBytes(schema.block, bytes)) {
    // Names with bytes after their NUL, wrong sizes or offsets, non-zero padding: all refused.
    const at = schema.block.findIndex((b, i) => b !== bytes[i]);
    fail(
      `byte 0x${at.toString(16)} must be 0x${schema.block[at]!.toString(16)}: current value is 0x${
        bytes[at]!.toString(16)
      }`,
    );
  }
  return schema;
}

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK64 = 0xffff_ffff_ffff_ffffn;

/**
 * 64-bit FNV-1a hash of `bytes`: the schema fingerprint (stored at 0x090, carried by sinks).
 *
 * @example
 * ```ts
 * import { fingerprint64 } from "./schema.ts";
 * console.assert(fingerprint64(new Uint8Array(0)) === 0xcbf29ce484222325n);
 * ```
 */
export function fingerprint64(bytes: Uint8Array): bigint {
  let h = FNV_OFFSET;
  for (const b of bytes) h = ((h ^ BigInt(b)) * FNV_PRIME) & MASK64;
  return h;
}

/** The default schema's block, once it is built (the first schema built is the default). */
const defaultBlock: { bytes?: Uint8Array } = {};

/**
 * Today's entry, the schema of every segment without a block: `symbol char[8]`, `price i64`
 * scale 4, `quantity u32`, `side char[1]`. Its CSV is byte for byte the one of layout v1.
 *
 * @example
 * ```ts
 * import { DEFAULT_SCHEMA } from "./schema.ts";
 * console.assert(DEFAULT_SCHEMA.fields.map((f) => f.name).join() === "symbol,price,quantity,side");
 * ```
 */
export const DEFAULT_SCHEMA: Schema = defineSchema([
  { name: "symbol", type: "char[8]" },
  { name: "price", type: "i64", scale: 4 },
  { name: "quantity", type: "u32" },
  { name: "side", type: "char[1]" },
]);
defaultBlock.bytes = DEFAULT_SCHEMA.block;

/**
 * A schema as plain JSON (see {@link schemaToJson}).
 *
 * @example
 * ```ts
 * import { DEFAULT_SCHEMA, type SchemaJson, schemaToJson } from "./schema.ts";
 * const json: SchemaJson = schemaToJson(DEFAULT_SCHEMA);
 * console.assert(json.default);
 * ```
 */
export interface SchemaJson {
  /** The fingerprint as 16 hex digits. */
  fingerprint: string;
  /** Whether it is the default schema (a segment with no block). */
  default: boolean;
  /** The fields in order. */
  fields: { name: string; type: string; scale?: number; offset: number }[];
}

/**
 * The schema as plain JSON: `{ fingerprint, fields: [{ name, type, scale?, offset }] }` (the
 * fingerprint as 16 hex digits). For `status --json` and tools.
 *
 * @example
 * ```ts
 * import { DEFAULT_SCHEMA, schemaToJson } from "./schema.ts";
 * console.assert(schemaToJson(DEFAULT_SCHEMA).fields[1]!.scale === 4);
 * ```
 */
export function schemaToJson(schema: Schema): SchemaJson {
  return {
    fingerprint: schema.fingerprint.toString(16).padStart(16, "0"),
    default: schema.isDefault,
    fields: schema.fields.map((f) => ({
      name: f.name,
      type: f.type,
      ...(f.scale === 0 ? {} : { scale: f.scale }),
      offset: f.offset,
    })),
  };
}

/**
 * One line per field, e.g. `symbol char[8] @0x10, price i64 scale 4 @0x18`.
 *
 * @example
 * ```ts
 * import { defineSchema, describeSchema } from "./schema.ts";
 * console.assert(describeSchema(defineSchema([{ name: "a", type: "u8" }])) === "a u8 @0x10");
 * ```
 */
export function describeSchema(schema: Schema): string {
  return schema.fields.map((f) =>
    `${f.name} ${f.type}${f.scale ? ` scale ${f.scale}` : ""} @0x${f.offset.toString(16)}`
  ).join(", ");
}

/**
 * The schema stored in a validated segment in `buffer` of `size` bytes: the default when the
 * header's block words are all zero, else the decoded block, checked against the fingerprint.
 * Reads nothing outside `[0, size)`. Throws a {@link SegmentInvalidError} naming the problem.
 *
 * @example
 * ```ts
 * import { createRingBuffer } from "./ring.ts";
 * import { readSchema } from "./schema.ts";
 * const b = createRingBuffer(8);
 * console.assert(readSchema(b, b.byteLength, "(buffer)").isDefault);
 * ```
 */
export function readSchema(buffer: ArrayBuffer, size: number, name: string): Schema {
  const v = new DataView(buffer, 0, Math.min(size, buffer.byteLength));
  const fail = (what: string): never => {
    throw new SegmentInvalidError(`Cannot use segment ${name} as ${what}`);
  };
  if (v.byteLength < HEADER_SIZE) fail(`its size must be at least ${HEADER_SIZE} bytes`);
  const fp = v.getBigUint64(SCHEMA_FINGERPRINT_OFFSET, true);
  const offset = v.getUint32(SCHEMA_BLOCK_OFFSET_OFFSET, true);
  const length = v.getUint32(SCHEMA_BLOCK_LENGTH_OFFSET, true);
  const entriesOffset = v.getUint32(ENTRIES_OFFSET_OFFSET, true);
  if (fp === 0n && offset === 0 && length === 0) return DEFAULT_SCHEMA;
  if (offset !== HEADER_SIZE) {
    fail(`its schema block offset must be 0x180 (or 0 for no block): current value is ${offset}`);
  }
  if (length < SCHEMA_FIELDS_OFFSET || offset + length > entriesOffset || offset + length > size) {
    fail(
      `its schema block length must fit between 0x180 and entries_offset ${entriesOffset}: current value is ${length}`,
    );
  }
  const bytes = new Uint8Array(buffer, offset, length).slice();
  const actual = fingerprint64(bytes);
  if (actual !== fp) {
    fail(
      `its schema fingerprint must be the hash of its block 0x${
        hex64(actual)
      }: current value is 0x${hex64(fp)}`,
    );
  }
  try {
    const schema = decodeSchemaBlock(bytes);
    checkSchemaFits(schema, v.getUint32(ENTRY_SIZE_OFFSET, true));
    return schema;
  } catch (e) {
    return fail((e as Error).message.replace("Cannot use schema as ", "schema block "));
  }
}

function hex64(n: bigint): string {
  return n.toString(16).padStart(16, "0");
}

/**
 * The `entries_offset` a segment with `schema` gets: 0x180 without a block (the default schema),
 * else the first multiple of 64 at or after the block's end.
 *
 * @example
 * ```ts
 * import { DEFAULT_SCHEMA, defineSchema, entriesOffsetFor } from "./schema.ts";
 * console.assert(entriesOffsetFor(DEFAULT_SCHEMA) === 0x180);
 * console.assert(entriesOffsetFor(defineSchema([{ name: "a", type: "u8" }])) === 0x1c0);
 * ```
 */
export function entriesOffsetFor(schema: Schema): number {
  if (schema.isDefault) return HEADER_SIZE;
  return Math.ceil((HEADER_SIZE + schema.block.length) / 64) * 64;
}

/**
 * Writes `schema` into a fresh (zeroed) segment buffer: the block at 0x180, its place and
 * fingerprint in the header. Nothing for the default schema. Call before the magic is stored.
 */
export function writeSchema(buffer: ArrayBuffer, schema: Schema): void {
  if (schema.isDefault) return;
  const v = new DataView(buffer);
  new Uint8Array(buffer, HEADER_SIZE, schema.block.length).set(schema.block);
  v.setBigUint64(SCHEMA_FINGERPRINT_OFFSET, schema.fingerprint, true);
  v.setUint32(SCHEMA_BLOCK_OFFSET_OFFSET, HEADER_SIZE, true);
  v.setUint32(SCHEMA_BLOCK_LENGTH_OFFSET, schema.block.length, true);
}

// ---------------------------------------------------------------------------------------------
// Values: encoding a record, and the simulated writer's values.

/**
 * A value for one field: a number, a bigint (64-bit integers), a string (char fields) or a
 * `Uint8Array` (bytes fields).
 *
 * @example
 * ```ts
 * import type { FieldValue } from "./schema.ts";
 * const values: FieldValue[] = [101.25, 2n ** 63n - 1n, "XNAS", new Uint8Array([1, 2])];
 * console.assert(values.length === 4);
 * ```
 */
export type FieldValue = number | bigint | string | Uint8Array;

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const POW10 = Array.from({ length: 19 }, (_, i) => 10 ** i);

function rangeError(f: Field, what: string, value: unknown): never {
  const shown = typeof value === "bigint" ? `${value}n` : describe(value);
  throw new RangeError(`Cannot publish as field ${f.name} ${what}: current value is ${shown}`);
}

function intBounds(f: Field): [number, number] {
  const bits = f.size * 8;
  return f.kind === "uint" ? [0, 2 ** bits - 1] : [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1];
}

/**
 * Writes `value` into field `f` of the entry at byte `slot` of `view`. Allocates nothing except
 * for bigint arithmetic on 64-bit fields given as a bigint. Numbers for scaled fields are
 * rounded to the nearest unit (123.45 at scale 2 is stored as 12345); `u64`/`i64` take a bigint
 * or a safe integer; char fields take ASCII text of at most N characters, NUL-padded. Anything
 * else is a RangeError naming the field.
 *
 * @example
 * ```ts
 * import { defineSchema, writeField } from "./schema.ts";
 * const s = defineSchema([{ name: "px", type: "i32", scale: 2 }]);
 * const view = new DataView(new ArrayBuffer(64));
 * writeField(view, 0, s.fields[0]!, 123.45);
 * console.assert(view.getInt32(16, true) === 12345);
 * ```
 */
export function writeField(view: DataView, slot: number, f: Field, value: FieldValue): void {
  const at = slot + f.offset;
  if (f.kind === "bytes") {
    if (!(value instanceof Uint8Array)) rangeError(f, `must be a Uint8Array (${f.type})`, value);
    const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    writeBytes(bytes, at, f, value as Uint8Array);
    return;
  }
  if (f.kind === "char") {
    if (typeof value !== "string") rangeError(f, `must be a string (${f.type})`, value);
    const text = value as string;
    if (text.length > f.size) {
      rangeError(f, `must be at most ${f.size} characters (${f.type})`, value);
    }
    for (let i = 0; i < text.length; i++) {
      if (text.charCodeAt(i) > 0x7f) rangeError(f, "must be ASCII", value);
    }
    for (let i = 0; i < f.size; i++) {
      view.setUint8(at + i, i < text.length ? text.charCodeAt(i) : 0);
    }
    return;
  }
  if (f.kind === "float") {
    if (typeof value !== "number") rangeError(f, `must be a number (${f.type})`, value);
    if (f.size === 4) {
      const v = value as number;
      if (Number.isFinite(v) && Math.abs(v) > 3.4028234663852886e38) {
        rangeError(f, "must fit in f32", value);
      }
      view.setFloat32(at, v, true);
    } else view.setFloat64(at, value as number, true);
    return;
  }
  if (f.size === 8) {
    let big: bigint;
    if (typeof value === "bigint") {
      big = value; // a bigint is the stored units, already scaled
    } else if (typeof value === "number") {
      const units = f.scale === 0 ? value : Math.round(value * POW10[f.scale]!);
      if (!Number.isSafeInteger(units)) {
        rangeError(
          f,
          f.scale === 0
            ? `must be a bigint or a safe integer (${f.type})`
            : `must be a number whose value x 10^${f.scale} is a safe integer, or a bigint of units`,
          value,
        );
      }
      if (f.kind === "uint" && units < 0) rangeError(f, `must be 0..2^64-1 (${f.type})`, value);
      // Two words, no bigint: two's complement of a safe integer, word by word.
      view.setUint32(at, units >>> 0, true);
      view.setUint32(at + 4, Math.floor(units / 4294967296) >>> 0, true);
      return;
    } else {
      return rangeError(f, `must be a bigint or a number (${f.type})`, value);
    }
    if (f.kind === "uint" ? big < 0n || big > U64_MAX : big < I64_MIN || big > I64_MAX) {
      rangeError(
        f,
        f.kind === "uint" ? "must be 0..2^64-1 (u64)" : "must be -2^63..2^63-1 (i64)",
        value,
      );
    }
    if (f.kind === "uint") view.setBigUint64(at, big, true);
    else view.setBigInt64(at, big, true);
    return;
  }
  let units: number;
  if (typeof value === "number") {
    units = f.scale === 0 ? value : Math.round(value * POW10[f.scale]!);
  } else if (typeof value === "bigint") {
    units = Number(value);
    if (BigInt(units) !== value) rangeError(f, `must fit in ${f.type}`, value);
  } else {
    return rangeError(f, `must be a number (${f.type})`, value);
  }
  const [min, max] = intBounds(f);
  if (!Number.isInteger(units) || units < min || units > max) {
    rangeError(
      f,
      f.scale === 0
        ? `must be an integer from ${min} to ${max} (${f.type})`
        : `must be from ${min / POW10[f.scale]!} to ${
          max / POW10[f.scale]!
        } (${f.type} scale ${f.scale})`,
      value,
    );
  }
  switch (f.size) {
    case 1:
      view.setUint8(at, units & 0xff);
      break;
    case 2:
      view.setUint16(at, units & 0xffff, true);
      break;
    default:
      view.setUint32(at, units >>> 0, true);
  }
}

/**
 * Writes `value` into the `bytes[N]` field `f` at byte `at` of `bytes`: its length as a
 * little-endian u32, the bytes, then zeros up to N. Allocates nothing. A value longer than N is a
 * RangeError naming the field, N and the length.
 *
 * @example
 * ```ts
 * import { defineSchema, writeBytes } from "./schema.ts";
 * const f = defineSchema([{ name: "blob", type: "bytes[8]" }]).fields[0]!;
 * const entry = new Uint8Array(64);
 * writeBytes(entry, f.offset, f, new Uint8Array([7, 8]));
 * console.assert(entry[16] === 2 && entry[20] === 7 && entry[21] === 8);
 * ```
 */
export function writeBytes(bytes: Uint8Array, at: number, f: Field, value: Uint8Array): void {
  const n = value.length;
  if (n > f.maxLength) {
    throw new RangeError(
      `Cannot publish as field ${f.name} must be at most ${f.maxLength} bytes (${f.type}): current length is ${n}`,
    );
  }
  bytes[at] = n & 0xff;
  bytes[at + 1] = n >>> 8;
  bytes[at + 2] = n >>> 16;
  bytes[at + 3] = 0;
  const data = at + BYTES_LENGTH_SIZE;
  bytes.set(value, data);
  if (n < f.maxLength) bytes.fill(0, data + n, data + f.maxLength);
}

/**
 * Encodes `record` (values by field name) into the entry at byte `slot` of `view`: zeroes the
 * `payloadSize` payload bytes (48 in a 64-byte entry), then writes each field. A missing field
 * stays zero (empty text, empty bytes); an unknown name is a RangeError.
 *
 * @example
 * ```ts
 * import { defineSchema, encodeRecord } from "./schema.ts";
 * const s = defineSchema([{ name: "venue", type: "char[4]" }, { name: "qty", type: "u32" }]);
 * const view = new DataView(new ArrayBuffer(64));
 * encodeRecord(s, view, 0, { venue: "XNAS", qty: 7 });
 * console.assert(view.getUint32(20, true) === 7);
 * ```
 */
export function encodeRecord(
  schema: Schema,
  view: DataView,
  slot: number,
  record: Record<string, FieldValue>,
  payloadSize = PAYLOAD_SIZE,
): void {
  for (const key of Object.keys(record)) {
    if (!schema.fields.some((f) => f.name === key)) {
      throw new RangeError(
        `Cannot publish as field ${key} is not in the schema (${
          schema.fields.map((f) => f.name).join(", ")
        })`,
      );
    }
  }
  new Uint8Array(view.buffer, view.byteOffset + slot + PAYLOAD_OFFSET, payloadSize).fill(0);
  for (const f of schema.fields) {
    const value = record[f.name];
    if (value !== undefined) writeField(view, slot, f, value);
  }
}

/**
 * Period of the simulated values: entry `seq` of a custom schema holds the values of phase
 * `(seq + field index) mod 1024`, so the writer publishes from a precomputed table.
 */
export const SIMULATION_PERIOD = 1024;

/** Characters the simulated char fields cycle through: commas, quotes and NUL included. */
export const SIMULATED_CHARS = 'AZaz09 ,"\0-_.;:|';

/**
 * The value the simulated writer stores in field `f` of entry `seq` (custom schemas; the default
 * schema keeps today's engine, see `layout.ts`); for integers, the stored units (a scaled field
 * prints them divided by 10^scale). With `k = (seq + f.index) mod 1024`:
 *
 * - integers: the `k`-th of the type's special values (0, 1, the minimum, the maximum, -1, the
 *   maximum - 1, ...) while `k` is below their count, else `h(k) = (k * 2654435761 + 40503 *
 *   f.index) mod 2^32` reduced to the type: `h mod 2^bits`, sign-extended for signed types; 64-bit
 *   types use `h * 2^32 + (h ^ 0x9e3779b9)`, sign-extended;
 * - floats: the `k`-th of NaN, Infinity, -Infinity, -0, 0, the smallest and largest subnormals,
 *   the largest finite, the smallest normal, 1/3 and -2.5 (as the type holds them) while `k` is
 *   below 11, else `(h(k) / 2^32 - 0.5) * 10^(k mod 41 - 20)`, rounded to f32 for f32;
 * - char[N]: `k mod (N + 1)` characters, the `j`-th being `SIMULATED_CHARS[(k + 7j) mod 16]`;
 * - bytes[N]: `k mod (N + 1)` bytes, the `j`-th being `(k + 7j + 31 * f.index) mod 256`.
 *
 * A reporter prints char fields up to their first NUL.
 *
 * @example
 * ```ts
 * import { defineSchema, simulatedValue } from "./schema.ts";
 * const s = defineSchema([{ name: "a", type: "u8" }, { name: "b", type: "i64" }]);
 * console.assert(simulatedValue(s.fields[0]!, 0) === 0);
 * console.assert(simulatedValue(s.fields[1]!, 1) === -(2n ** 63n));
 * ```
 */
export function simulatedValue(f: Field, seq: number): FieldValue {
  const k = (seq + f.index) % SIMULATION_PERIOD;
  const h = (Math.imul(k, 2654435761) + Math.imul(40503, f.index)) >>> 0;
  if (f.kind === "bytes") {
    const out = new Uint8Array(k % (f.maxLength + 1));
    for (let j = 0; j < out.length; j++) out[j] = (k + 7 * j + 31 * f.index) & 0xff;
    return out;
  }
  if (f.kind === "char") {
    const len = k % (f.size + 1);
    let s = "";
    for (let j = 0; j < len; j++) s += SIMULATED_CHARS[(k + 7 * j) % SIMULATED_CHARS.length];
    return s;
  }
  if (f.kind === "float") {
    const specials = f.size === 4 ? F32_SPECIALS : F64_SPECIALS;
    if (k < specials.length) return specials[k]!;
    const v = (h / 4294967296 - 0.5) * 10 ** ((k % 41) - 20);
    return f.size === 4 ? Math.fround(v) : v;
  }
  const bits = f.size * 8;
  if (bits === 64) {
    const specials = f.kind === "uint" ? U64_SPECIALS : I64_SPECIALS;
    if (k < specials.length) return specials[k]!;
    const raw = (BigInt(h) << 32n) | BigInt((h ^ 0x9e3779b9) >>> 0);
    return f.kind === "uint" ? raw : BigInt.asIntN(64, raw);
  }
  const [min, max] = intBounds(f);
  const specials = f.kind === "uint" ? [0, 1, max, max - 1, 10, 99] : [0, 1, min, max, -1, -10];
  if (k < specials.length) return specials[k]!;
  const m = bits === 32 ? h : h % 2 ** bits;
  return f.kind === "uint" ? m : m > max ? m - 2 ** bits : m;
}

const U64_SPECIALS = [0n, 1n, U64_MAX, U64_MAX - 1n, 2n ** 53n + 1n, 10n ** 19n];
const I64_SPECIALS = [0n, I64_MIN, I64_MAX, -1n, I64_MIN + 1n, -(2n ** 53n) - 1n];
const F64_SPECIALS = [
  NaN,
  Infinity,
  -Infinity,
  -0,
  0,
  5e-324,
  2.225073858507201e-308,
  Number.MAX_VALUE,
  2.2250738585072014e-308,
  1 / 3,
  -2.5,
];
const F32_SPECIALS = [
  NaN,
  Infinity,
  -Infinity,
  -0,
  0,
  Math.fround(1.401298464324817e-45),
  Math.fround(1.1754942106924411e-38),
  Math.fround(3.4028234663852886e38),
  Math.fround(1.1754943508222875e-38),
  Math.fround(1 / 3),
  -2.5,
];

/**
 * The simulated payloads of one period for `schema` in entries of `entrySize` bytes:
 * `SIMULATION_PERIOD` rows of `(entrySize - 16) / 4` words, the payload of entry `seq` being row
 * `seq mod SIMULATION_PERIOD`. The writer copies rows from it, so publishing a custom schema
 * allocates nothing per entry.
 *
 * @example
 * ```ts
 * import { defineSchema, simulatedPayloads } from "./schema.ts";
 * const t = simulatedPayloads(defineSchema([{ name: "a", type: "u32" }]));
 * console.assert(t.length === 1024 * 12 && t[12] === 1);
 * ```
 */
export function simulatedPayloads(schema: Schema, entrySize = ENTRY_SIZE): Uint32Array {
  checkSchemaFits(schema, entrySize);
  const rowBytes = entrySize - PAYLOAD_OFFSET;
  const out = new Uint32Array(SIMULATION_PERIOD * (rowBytes / 4));
  const view = new DataView(out.buffer);
  for (let s = 0; s < SIMULATION_PERIOD; s++) {
    // Row s holds the payload: field offsets count from the entry's start, 16 bytes before it.
    const slot = s * rowBytes - PAYLOAD_OFFSET;
    for (const f of schema.fields) {
      // Integer values are the stored units (a bigint is never scaled by writeField).
      const v = simulatedValue(f, s);
      writeField(view, slot, f, typeof v === "number" && f.kind !== "float" ? BigInt(v) : v);
    }
  }
  return out;
}
