/**
 * `deno task status --serve`: the Prometheus endpoint. Every scrape of `/metrics` takes a fresh
 * read-only look at each segment (the {@link Status} object `status --json` prints) and writes it
 * in the text exposition format (version 0.0.4); `/status.json` returns those objects. A segment
 * that is missing or damaged is `rpt_segment_up 0` plus a comment saying why: the scrape never
 * fails because of one.
 *
 * The format is written here by hand rather than with `npm:prom-client` (which does run under
 * `--allow-ffi --allow-net=127.0.0.1:9464`): prom-client keeps long-lived metric objects in a
 * registry that the process increments, counters cannot be set to a value read from elsewhere,
 * it cannot emit the comment a down segment gets, and concurrent scrapes would share one registry.
 * Here each scrape is a pure function of the snapshots it took.
 *
 * @module
 */
import { ListenError, UsageError } from "./cli.ts";
import { type ReaderStatus, readerUnused, type Status } from "./segment_status.ts";

/** Where the endpoint listens unless told otherwise: loopback only, Prometheus's exporter range. */
export const DEFAULT_LISTEN = "127.0.0.1:9464";

/** A host and port to listen on. */
export interface ListenAddress {
  /** IPv4 address, host name, or IPv6 address without brackets. */
  hostname: string;
  /** TCP port, 1 to 65535. */
  port: number;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

/**
 * Parses `[HOST:]PORT` (`9464`, `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`); a port alone
 * means the loopback address 127.0.0.1. Throws a {@link UsageError} naming the bad value.
 *
 * @example
 * ```ts
 * import { parseListenAddress } from "./metrics.ts";
 * console.assert(parseListenAddress("9100").hostname === "127.0.0.1");
 * console.assert(parseListenAddress("[::1]:9100").hostname === "::1");
 * ```
 */
export function parseListenAddress(value: string): ListenAddress {
  const bad = (what: string) =>
    new UsageError(
      `Cannot serve metrics as ${what}: current value is ${JSON.stringify(value)}`,
    );
  const colon = value.lastIndexOf(":");
  let host = colon < 0 ? "127.0.0.1" : value.slice(0, colon);
  const portText = colon < 0 ? value : value.slice(colon + 1);
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw bad("the port must be an integer from 1 to 65535");
  }
  if (host.startsWith("[") && host.endsWith("]")) {
    host = host.slice(1, -1);
    if (!IPV6.test(host) || !host.includes(":")) throw bad("the IPv6 address is not valid");
    return { hostname: host, port };
  }
  const v4 = IPV4.exec(host);
  if (v4 !== null) {
    if (v4.slice(1).some((octet) => Number(octet) > 255)) {
      throw bad("the IPv4 address must have four numbers from 0 to 255");
    }
    return { hostname: host, port };
  }
  if (host.includes(":")) throw bad("an IPv6 address must be written in brackets ([::1]:PORT)");
  if (!HOST_NAME.test(host) || /^[\d.]+$/.test(host)) {
    throw bad("the host must be an IPv4 address, [IPv6] address or host name");
  }
  return { hostname: host, port };
}

/** `host:port` as a URL authority (IPv6 in brackets). */
export function formatAddress(a: ListenAddress): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/** One segment as one scrape saw it: its status, or why it could not be read. */
export type SegmentLook =
  | { name: string; status: Status }
  | { name: string; error: string };

/**
 * Looks at each segment with `read` (which maps it read-only and returns `readStatus`); an
 * error becomes the segment's `error` instead of failing the whole look.
 */
export function lookAt(names: readonly string[], read: (name: string) => Status): SegmentLook[] {
  return names.map((name) => {
    try {
      return { name, status: read(name) };
    } catch (e) {
      return { name, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
    }
  });
}

type Labels = Record<string, string>;
type Sample = [labels: Labels, value: number];

interface Family {
  name: string;
  type: "gauge" | "counter";
  help: string;
  samples: (look: { name: string; status: Status }) => Sample[];
}

function perReader(
  look: { name: string; status: Status },
  value: (r: ReaderStatus) => number | null,
): Sample[] {
  const out: Sample[] = [];
  for (const r of look.status.readers) {
    if (readerUnused(r)) continue; // no series: "reader down" means a reporter that stopped
    const v = value(r);
    if (v !== null) out.push([{ segment: look.name, reader: String(r.id) }, v]);
  }
  return out;
}

const seconds = (ms: number | null) => (ms === null ? null : ms / 1000);

/**
 * Every metric family but `rpt_segment_up`, in output order. Each is computed from the object
 * `readStatus` returns (what `status --json` prints), so whatever decides liveness there decides
 * `_up` here.
 */
const FAMILIES: readonly Family[] = [
  {
    name: "rpt_segment_info",
    type: "gauge",
    help:
      "Always 1; the segment's layout version, capacity, entry size in bytes, epoch (incarnation id) and payload schema fingerprint (16 hex digits) as labels.",
    samples: ({ name, status: s }) => [[{
      segment: name,
      version: String(s.version),
      capacity: String(s.capacity),
      entry_size: String(s.entry_size),
      epoch: s.epoch,
      schema_fingerprint: s.schema.fingerprint,
    }, 1]],
  },
  {
    name: "rpt_segment_capacity_entries",
    type: "gauge",
    help: "Number of slots in the ring.",
    samples: ({ name, status: s }) => [[{ segment: name }, s.capacity]],
  },
  {
    name: "rpt_writer_up",
    type: "gauge",
    help: "1 if a process holds the writer role, else 0.",
    samples: ({ name, status: s }) => [[{ segment: name }, s.writer.alive ? 1 : 0]],
  },
  {
    name: "rpt_writer_entries_total",
    type: "counter",
    help:
      "Entries written to the segment (write_ptr); restarts at 0 when the segment is re-created.",
    samples: ({ name, status: s }) => [[{ segment: name }, s.write_ptr]],
  },
  {
    name: "rpt_writer_heartbeat_age_seconds",
    type: "gauge",
    help: "Seconds since the writer's last heartbeat (absent if it never beat).",
    samples: ({ name, status: s }) => {
      const age = seconds(s.writer.heartbeat_age_ms);
      return age === null ? [] : [[{ segment: name }, age]];
    },
  },
  {
    name: "rpt_reader_up",
    type: "gauge",
    help: "1 if a process holds this reader id, else 0 (ids never attached are left out).",
    samples: (look) => perReader(look, (r) => (r.alive ? 1 : 0)),
  },
  {
    name: "rpt_reader_entries_total",
    type: "counter",
    help: "Entries this reader id has consumed, copied or lost (read_ptr).",
    samples: (look) => perReader(look, (r) => r.read_ptr),
  },
  {
    name: "rpt_reader_lag_entries",
    type: "gauge",
    help: "Entries written but not yet read by this reader id (write_ptr - read_ptr).",
    samples: (look) => perReader(look, (r) => r.lag),
  },
  {
    name: "rpt_reader_lag_seconds",
    type: "gauge",
    help: "Age of the oldest entry this reader id has not read; 0 when caught up, absent once " +
      "that entry is overwritten.",
    samples: (look) => perReader(look, (r) => (r.lag_ns === null ? null : r.lag_ns / 1e9)),
  },
  {
    name: "rpt_reader_lapped",
    type: "gauge",
    help: "1 if the writer has lapped this reader id (lag above capacity), else 0.",
    samples: (look) => perReader(look, (r) => (r.lapped ? 1 : 0)),
  },
  {
    name: "rpt_reader_lost_entries_total",
    type: "counter",
    help: "Entries this reader id skipped because the writer overwrote them first.",
    samples: (look) => perReader(look, (r) => r.lost),
  },
  {
    name: "rpt_reader_heartbeat_age_seconds",
    type: "gauge",
    help: "Seconds since this reader id's last heartbeat (absent if it never beat).",
    samples: (look) => perReader(look, (r) => seconds(r.heartbeat_age_ms)),
  },
];

/** Every metric name `/metrics` may show, for documentation and tests. */
export const METRIC_NAMES: readonly string[] = ["rpt_segment_up", ...FAMILIES.map((f) => f.name)];

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function sampleLine(name: string, labels: Labels, value: number): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",");
  return `${name}{${pairs}} ${formatValue(value)}`;
}

/**
 * Writes the looks in the Prometheus text exposition format 0.0.4: HELP and TYPE for every
 * family, one comment per segment that is down, `rpt_segment_up` for every segment.
 *
 * @example
 * ```ts
 * import { formatMetrics } from "./metrics.ts";
 * const text = formatMetrics([{ name: "/rpt_gone", error: "SegmentNotFoundError: no such segment" }]);
 * console.assert(text.includes('rpt_segment_up{segment="/rpt_gone"} 0'));
 * ```
 */
export function formatMetrics(looks: readonly SegmentLook[]): string {
  const lines: string[] = [];
  const up: { name: string; status: Status }[] = [];
  for (const look of looks) {
    if ("error" in look) {
      lines.push(`# segment ${look.name} is down: ${look.error}`.replaceAll("\n", " "));
    } else up.push(look);
  }
  lines.push(
    "# HELP rpt_segment_up 1 if the segment was mapped and validated on this scrape, else 0.",
    "# TYPE rpt_segment_up gauge",
  );
  for (const look of looks) {
    lines.push(sampleLine("rpt_segment_up", { segment: look.name }, "error" in look ? 0 : 1));
  }
  for (const family of FAMILIES) {
    lines.push(
      `# HELP ${family.name} ${escapeHelp(family.help)}`,
      `# TYPE ${family.name} ${family.type}`,
    );
    for (const look of up) {
      for (const [labels, value] of family.samples(look)) {
        lines.push(sampleLine(family.name, labels, value));
      }
    }
  }
  return lines.join("\n") + "\n";
}

/**
 * What `/status.json` returns: one object per segment, in `--name` order: the object
 * `status --json` prints, or `{ name, up: false, error }` for a segment that could not be read.
 */
export function statusJson(looks: readonly SegmentLook[]): unknown[] {
  return looks.map((look) =>
    "error" in look ? { name: look.name, up: false, error: look.error } : look.status
  );
}

/** Options of {@link serveMetrics}. */
export interface ServeOptions {
  /** Segment names to look at on every scrape. */
  names: readonly string[];
  /** Where to listen. */
  address: ListenAddress;
  /** Maps a segment read-only and returns its status (`readStatus`). */
  read: (name: string) => Status;
  /** Stops the server when aborted. */
  signal?: AbortSignal;
}

/** The content type of the text exposition format. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Answers one HTTP request: `/metrics`, `/status.json`, else 404 (405 for other methods). */
export function handleRequest(
  request: Request,
  names: readonly string[],
  read: (name: string) => Status,
): Response {
  const path = new URL(request.url).pathname;
  if (path !== "/metrics" && path !== "/status.json") {
    return new Response(`Not found: ${path}; try /metrics or /status.json\n`, {
      status: 404,
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response(`Method not allowed: ${request.method}\n`, {
      status: 405,
      headers: { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" },
    });
  }
  const looks = lookAt(names, read);
  const headers = { "cache-control": "no-store" };
  if (path === "/metrics") {
    return new Response(formatMetrics(looks), {
      headers: { ...headers, "content-type": EXPOSITION_CONTENT_TYPE },
    });
  }
  return new Response(JSON.stringify(statusJson(looks)) + "\n", {
    headers: { ...headers, "content-type": "application/json" },
  });
}

/**
 * Starts the HTTP server; resolves once it has stopped (after `signal` aborts). Throws a
 * {@link ListenError} naming the address if it cannot listen (in use, not an address of this
 * machine, or not granted by `--allow-net`).
 */
export async function serveMetrics(options: ServeOptions): Promise<void> {
  const { names, address, read } = options;
  const where = formatAddress(address);
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({
      hostname: address.hostname,
      port: address.port,
      signal: options.signal,
      onListen: () =>
        console.log(
          `status: serving http://${where}/metrics and /status.json for ${names.join(", ")}`,
        ),
      onError: (e) => {
        console.error(`status: error: request failed: ${(e as Error).message ?? e}`);
        return new Response("internal error\n", { status: 500 });
      },
    }, (request) => handleRequest(request, names, read));
  } catch (e) {
    throw listenError(e, where);
  }
  await server.finished;
}

function listenError(e: unknown, where: string): Error {
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof Deno.errors.AddrInUse) {
    return new ListenError(`Cannot serve metrics as the address is already in use: ${where}`);
  }
  if (e instanceof Deno.errors.AddrNotAvailable) {
    return new ListenError(
      `Cannot serve metrics as the address is not one of this machine's: ${where}`,
    );
  }
  if (e instanceof Deno.errors.NotCapable) {
    return new ListenError(
      `Cannot serve metrics as the address is not granted (run deno with --allow-net=${where}): ${where}`,
    );
  }
  if (e instanceof Deno.errors.PermissionDenied) {
    return new ListenError(
      `Cannot serve metrics as the system refuses this address (a port below 1024?): ${where}`,
    );
  }
  return new ListenError(`Cannot serve metrics on ${where} (${message.split("\n")[0]})`);
}
