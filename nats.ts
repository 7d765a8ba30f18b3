/**
 * Reaching a NATS JetStream server from `bridge.ts` and `follow.ts`: the server URL
 * (`nats://[user:pass@|token@]host:port/STREAM` or `tls://...`), the default subject of a segment,
 * connecting with credentials and TLS (retrying with backoff while the server is unreachable),
 * and checking that the stream captures the subject. Every failure is a {@link NatsError} with
 * its own exit status.
 *
 * @module
 */
import {
  type ConnectionOptions,
  credsAuthenticator,
  errors,
  type NatsConnection,
} from "@nats-io/transport-node";
import { connect } from "@nats-io/transport-node";
import { type JetStreamManager, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { ExitCode, nameFlag, NatsError, sleep, UsageError } from "./cli.ts";

/** Where a server URL points: server, credentials and stream. */
export interface NatsTarget {
  /** `tls` for `tls://` URLs: the connection must be TLS. */
  scheme: "nats" | "tls";
  /** Host name or address. */
  host: string;
  /** Port (default 4222). */
  port: number;
  /** The stream's name (the URL's path). */
  stream: string;
  /** User of `user:pass@`. */
  user?: string | undefined;
  /** Password of `user:pass@`. */
  pass?: string | undefined;
  /** Token of `token@`. */
  token?: string | undefined;
  /** The URL without its secrets, for messages. */
  display: string;
}

/**
 * Parses a server URL. Throws a {@link NatsError}: exit 10 for a scheme other than `nats://` or
 * `tls://`, 11 for a missing or invalid stream name.
 *
 * @example
 * ```ts
 * import { parseNatsUrl } from "./nats.ts";
 * const t = parseNatsUrl("nats://127.0.0.1:4222/ORDERS", "bridge");
 * console.assert(t.stream === "ORDERS" && t.port === 4222);
 * ```
 */
export function parseNatsUrl(raw: string, program: string): NatsTarget {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(raw)?.[1]?.toLowerCase();
  if (scheme !== "nats" && scheme !== "tls") {
    throw new NatsError(
      `Cannot start ${program} as the server URL must start with nats:// or tls://: current value is ${
        JSON.stringify(raw)
      }`,
      ExitCode.NATS_URL,
    );
  }
  let url: URL;
  try {
    // URL parses credentials and port for any scheme once it is a "special" one.
    url = new URL(`http://${raw.slice(scheme.length + 3)}`);
  } catch {
    throw new NatsError(
      `Cannot start ${program} as the server URL is not a valid URL: current value is ${
        JSON.stringify(raw)
      }`,
      ExitCode.NATS_URL,
    );
  }
  const display = `${scheme}://${url.host}${url.pathname}`;
  const stream = decodeURIComponent(url.pathname.replace(/^\/+/, "").replace(/\/+$/, ""));
  if (stream === "") {
    throw new NatsError(
      `Cannot start ${program} as the server URL names no stream (nats://HOST:PORT/STREAM): current value is ${
        JSON.stringify(display)
      }`,
      ExitCode.NATS_STREAM_NAME,
    );
  }
  if (!/^[A-Za-z0-9_-]{1,255}$/.test(stream)) {
    throw new NatsError(
      `Cannot start ${program} as the stream name must be 1 to 255 characters of A-Z a-z 0-9 _ -: current value is ${
        JSON.stringify(stream)
      }`,
      ExitCode.NATS_STREAM_NAME,
    );
  }
  const user = url.username === "" ? undefined : decodeURIComponent(url.username);
  const pass = url.password === "" ? undefined : decodeURIComponent(url.password);
  return {
    scheme,
    host: url.hostname,
    port: url.port === "" ? 4222 : Number(url.port),
    stream,
    user: pass === undefined ? undefined : user,
    pass,
    token: pass === undefined ? user : undefined,
    display,
  };
}

/**
 * The subject a segment's entries are published on by default: `rpt.` then the segment name
 * without its slash, each `.` replaced by `_` (`/rpt_sys_shm` gives `rpt.rpt_sys_shm`).
 *
 * @example
 * ```ts
 * import { defaultSubject } from "./nats.ts";
 * console.assert(defaultSubject("/rpt_sys_shm") === "rpt.rpt_sys_shm");
 * ```
 */
export function defaultSubject(segmentName: string): string {
  return `rpt.${segmentName.replace(/^\//, "").replaceAll(".", "_")}`;
}

/**
 * Checks a `--subject` value: dot-separated non-empty tokens of printable ASCII without
 * wildcards. Throws a UsageError naming it.
 */
export function validateSubject(program: string, subject: string): string {
  if (!/^[!-~]+$/.test(subject) || subject.split(".").some((t) => t === "" || /[*>]/.test(t))) {
    throw new UsageError(
      `Cannot start ${program} as --subject must be dot-separated tokens without spaces or wildcards: current value is ${
        JSON.stringify(subject)
      }`,
    );
  }
  return subject;
}

/** The flags of a program that reaches a NATS server (`bridge`, `follow`), for {@link parse}. */
export const NATS_FLAGS = {
  name: { type: "string" },
  subject: { type: "string" },
  creds: { type: "string" },
  "tls-ca": { type: "string" },
} as const;

/** A NATS program's server, segment name, subject and credentials, parsed from its arguments. */
export interface NatsDestination {
  target: NatsTarget;
  name: string;
  subject: string;
  creds?: string | undefined;
  tlsCa?: string | undefined;
}

/**
 * Parses the server URL `url` and the {@link NATS_FLAGS} values of `program`: the URL first, then
 * `--name`, then `--subject` (default: the segment name's subject). Throws a NatsError or a
 * UsageError naming the bad value.
 *
 * @example
 * ```ts
 * import { parseNatsDestination } from "./nats.ts";
 * const d = parseNatsDestination("bridge", "nats://127.0.0.1:4222/RPT", {});
 * console.assert(d.subject === "rpt.rpt_sys_shm");
 * ```
 */
export function parseNatsDestination(
  program: string,
  url: string,
  values: Record<string, string | boolean | undefined>,
): NatsDestination {
  const target = parseNatsUrl(url, program);
  const name = nameFlag(`start ${program}`, values.name);
  const subject = validateSubject(
    program,
    (values.subject as string | undefined) ?? defaultSubject(name),
  );
  return {
    target,
    name,
    subject,
    creds: values.creds as string | undefined,
    tlsCa: values["tls-ca"] as string | undefined,
  };
}

/**
 * Whether the subject filter `filter` (with `*` and `>` wildcards) captures `subject`.
 *
 * @example
 * ```ts
 * import { subjectCovers } from "./nats.ts";
 * console.assert(subjectCovers("rpt.>", "rpt.a.b") && !subjectCovers("rpt.*", "rpt.a.b"));
 * ```
 */
export function subjectCovers(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const s = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (f[i] !== "*" && f[i] !== s[i]) return false;
  }
  return f.length === s.length;
}

/** Options of {@link connectNats}. */
export interface ConnectOptions {
  /** Program name for messages. */
  program: string;
  /** A NATS credentials file (`--creds`). */
  creds?: string | undefined;
  /** A CA certificate file (`--tls-ca`): the server must present a certificate it signed. */
  tlsCa?: string | undefined;
  /** Prints a notice. */
  say: (line: string) => void;
  /** True once the program was asked to stop. */
  stopped: () => boolean;
}

/** Backoff between connection attempts: doubles from 250 ms up to 5 s. */
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;

/**
 * Connects to the server of `target`. While it is unreachable, says so once and retries with
 * backoff until it answers or the program is stopped (then undefined). Refused credentials and
 * TLS failures throw a {@link NatsError} at once. The connection reconnects by itself later.
 */
export async function connectNats(
  target: NatsTarget,
  o: ConnectOptions,
): Promise<NatsConnection | undefined> {
  const options: ConnectionOptions = {
    servers: `${target.host}:${target.port}`,
    name: o.program,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    reconnectJitter: 100,
  };
  if (target.user !== undefined) {
    options.user = target.user;
    options.pass = target.pass;
  } else if (target.token !== undefined) {
    options.token = target.token;
  }
  if (o.creds !== undefined) {
    let text: Uint8Array;
    try {
      text = Deno.readFileSync(o.creds);
    } catch (e) {
      throw new NatsError(
        `Cannot read credentials file ${o.creds}: ${(e as Error).message}`,
        ExitCode.NATS_AUTH,
      );
    }
    if (!new TextDecoder().decode(text).includes("-----BEGIN NATS USER JWT-----")) {
      throw new NatsError(
        `Cannot use credentials file ${o.creds} as it holds no NATS user JWT`,
        ExitCode.NATS_AUTH,
      );
    }
    options.authenticator = credsAuthenticator(text);
  }
  if (target.scheme === "tls" || o.tlsCa !== undefined) {
    if (o.tlsCa !== undefined) {
      try {
        Deno.statSync(o.tlsCa);
      } catch (e) {
        throw new NatsError(
          `Cannot read TLS CA file ${o.tlsCa}: ${(e as Error).message}`,
          ExitCode.NATS_TLS,
        );
      }
    }
    options.tls = o.tlsCa === undefined ? {} : { caFile: o.tlsCa };
  }
  let told = false;
  let wait = RETRY_MIN_MS;
  while (!o.stopped()) {
    try {
      const nc = await connect(options);
      if (told) o.say(`${o.program}: reached ${target.display}`);
      return nc;
    } catch (e) {
      const failure = classify(e, target);
      if (failure !== undefined) throw failure;
      if (!told) {
        o.say(
          `${o.program}: cannot reach ${target.display} (${
            (e as Error).message
          }); retrying with backoff`,
        );
        told = true;
      }
    }
    const until = Date.now() + wait;
    while (!o.stopped() && Date.now() < until) await sleep(50);
    wait = Math.min(wait * 2, RETRY_MAX_MS);
  }
  return undefined;
}

/** A connection failure that retrying cannot fix, as a NatsError; undefined for "unreachable". */
function classify(e: unknown, target: NatsTarget): NatsError | undefined {
  const message = e instanceof Error ? e.message : String(e);
  const chain = `${message} ${(e as { cause?: Error }).cause?.message ?? ""}`;
  if (/Requires net access/.test(chain)) {
    return new NatsError(
      `Cannot connect to ${target.display} as this program may only reach the hosts of its --allow-net grant (deno task bridge/follow: 127.0.0.1:4222 and localhost:4222; docs/beyond-one-host.md shows other hosts): ${message}`,
      ExitCode.NATS_NOT_PERMITTED,
    );
  }
  if (
    e instanceof errors.AuthorizationError || e instanceof errors.UserAuthenticationExpiredError ||
    /authorization|authentication/i.test(chain)
  ) {
    return new NatsError(
      `Cannot connect to ${target.display} as the server refused the credentials: ${message}`,
      ExitCode.NATS_AUTH,
    );
  }
  if (/tls|ssl|certificate|self.signed|CERT_|ERR_TLS/i.test(chain)) {
    return new NatsError(
      `Cannot connect to ${target.display} over TLS: ${chain.trim()}`,
      ExitCode.NATS_TLS,
    );
  }
  return undefined;
}

/**
 * Checks that `stream` exists and captures `subject`; with `create`, makes a missing stream
 * (file storage, the one subject). Throws a {@link NatsError}: 13 when the stream's subjects do
 * not capture the subject, 15 when it is missing and not created, 16 when the server refuses.
 */
export async function ensureStream(
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  create: boolean,
  say: (line: string) => void,
): Promise<void> {
  let subjects: string[];
  try {
    subjects = (await jsm.streams.info(stream)).config.subjects ?? [];
  } catch (e) {
    if (!/stream not found/i.test((e as Error).message)) throw refused(e, `read stream ${stream}`);
    if (!create) {
      throw new NatsError(
        `Cannot follow stream ${stream} as it does not exist on the server`,
        ExitCode.NATS_STREAM_MISSING,
      );
    }
    try {
      await jsm.streams.add({ name: stream, subjects: [subject], storage: StorageType.File });
    } catch (e) {
      throw refused(e, `create stream ${stream}`);
    }
    say(`stream ${stream} created (file storage, subject ${subject})`);
    return;
  }
  if (!subjects.some((f) => subjectCovers(f, subject))) {
    throw new NatsError(
      `Cannot use stream ${stream} as its subjects do not capture ${subject}: current value is ${
        JSON.stringify(subjects)
      }`,
      ExitCode.NATS_SUBJECT,
    );
  }
}

/**
 * The subject to follow in `stream` when neither `--subject` nor `--name` was given: the one
 * subject holding messages (a stream one bridge fills), else, for an empty stream, its one
 * configured subject when that is literal, else `fallback`. A stream holding messages of several
 * subjects is a UsageError listing them (exit 2); a missing stream a NatsError (exit 15).
 */
export async function streamSubject(
  jsm: JetStreamManager,
  stream: string,
  fallback: string,
): Promise<string> {
  let info;
  try {
    info = await jsm.streams.info(stream, { subjects_filter: ">" });
  } catch (e) {
    if (!/stream not found/i.test((e as Error).message)) throw refused(e, `read stream ${stream}`);
    throw new NatsError(
      `Cannot follow stream ${stream} as it does not exist on the server`,
      ExitCode.NATS_STREAM_MISSING,
    );
  }
  const held = Object.keys(info.state.subjects ?? {}).sort();
  if (held.length === 1) return held[0]!;
  if (held.length > 1) {
    throw new UsageError(
      `Cannot start follow as stream ${stream} holds the messages of several subjects, so give --subject or --name: current value is ${
        held.join(", ")
      }`,
    );
  }
  const configured = info.config.subjects ?? [];
  return configured.length === 1 && !/[*>]/.test(configured[0]!) ? configured[0]! : fallback;
}

/** The JetStream manager of a connection, or a NatsError when JetStream is not available. */
export async function manager(nc: NatsConnection): Promise<JetStreamManager> {
  try {
    return await jetstreamManager(nc);
  } catch (e) {
    throw refused(e, "use JetStream");
  }
}

function refused(e: unknown, what: string): NatsError {
  return new NatsError(
    `Cannot ${what} as the server refused: ${(e as Error).message}`,
    ExitCode.NATS_REFUSED,
  );
}
