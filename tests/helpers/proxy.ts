import { connect, createServer, type AddressInfo, type Socket } from "node:net";

/**
 * A TCP proxy on 127.0.0.1:`port` (0: any free port) to `target`'s host and port: tests stop it to
 * refuse new connections while the ones through it stay, or start it late to make a port answer.
 */
export function tcpProxy(target: URL, port = 0) {
  return Bun.listen<{ upstream?: import("bun").Socket; pending: Uint8Array[] }>({
    hostname: "127.0.0.1", port,
    socket: {
      open(client) {
        client.data = { pending: [] };
        void Bun.connect({
          hostname: target.hostname, port: Number(target.port),
          socket: {
            open(upstream) {
              client.data.upstream = upstream;
              for (const chunk of client.data.pending) upstream.write(chunk);
            },
            data: (_upstream, chunk) => void client.write(chunk),
            close: () => void client.end(),
          },
        });
      },
      data(client, chunk) {
        if (client.data.upstream) client.data.upstream.write(chunk);
        else client.data.pending.push(new Uint8Array(chunk));
      },
      close: (client) => void client.data.upstream?.end(),
    },
  });
}

/**
 * A TCP proxy to `target` (node:net, for its TCP reset) that hands the first connection whose
 * array-type read (postgres.js's first query on a new connection) passes to `onTypeRead` instead
 * of forwarding it: `forward()` sends the read on (and what the client sent after it), or the
 * handler ends the connection. Later connections pass untouched. `url` is `target` through the
 * proxy; `reads` counts the type reads handed over.
 */
export async function typeReadProxy(target: URL, onTypeRead: (client: Socket, upstream: Socket, forward: () => void) => void) {
  let reads = 0;
  const proxy = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    let held: (string | Buffer)[] | undefined;
    upstream.on("data", (chunk) => client.write(chunk));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.on("close", () => upstream.destroy());
    client.on("data", (chunk) => {
      if (held) held.push(chunk);
      else if (reads === 0 && chunk.includes("typarray")) {
        reads++;
        held = [chunk];
        onTypeRead(client, upstream, () => {
          for (const c of held!.splice(0)) upstream.write(c);
          held = undefined;
        });
      } else upstream.write(chunk);
    });
  });
  await new Promise<void>((listening) => proxy.listen(0, "127.0.0.1", listening));
  const url = new URL(target);
  url.port = String((proxy.address() as { port: number }).port);
  return { url: url.toString(), reads: () => reads, close: () => void proxy.close() };
}

/** `typeReadProxy`'s handler that cuts the connection at its type read: the upstream side closed, the client's by `cut`. */
export const cutAt = (cut: (client: Socket) => void) => (client: Socket, upstream: Socket) => {
  upstream.destroy();
  cut(client);
};

/**
 * A TCP listener that closes the connections it accepts cleanly (no error, no answer) while
 * `closes(n)` holds for the n-th one (from 1), and forwards the others to `target`.
 */
export async function closingHost(target: URL, closes: (n: number) => boolean) {
  let accepted = 0;
  const server = createServer((client) => {
    if (closes(++accepted)) return void client.end();
    const upstream = connect(Number(target.port), target.hostname);
    client.pipe(upstream).pipe(client);
    const drop = () => { client.destroy(); upstream.destroy(); };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as AddressInfo).port, accepted: () => accepted, close: () => server.close() };
}

/**
 * A TCP proxy to `target` (node:net) that forwards each client chunk `pass` lets through, ends the
 * connection on one it refuses, and forwards nothing either way — closing nothing — while
 * `quiet()` holds (a connection accepted then is never answered).
 */
async function forwardingProxy(target: URL, pass: (chunk: Buffer | string) => boolean, quiet: () => boolean) {
  let accepted = 0;
  const sockets: Socket[] = [];
  const server = createServer((client) => {
    accepted++;
    sockets.push(client);
    if (quiet()) return;
    const upstream = connect(Number(target.port), target.hostname);
    sockets.push(upstream);
    const drop = () => { if (!quiet()) { client.destroy(); upstream.destroy(); } };
    client.on("data", (chunk) => void (quiet() || (pass(chunk) ? upstream.write(chunk) : drop())));
    upstream.on("data", (chunk) => void (quiet() || client.write(chunk)));
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port, accepted: () => accepted,
    close: () => { server.close(); for (const s of sockets) s.destroy(); },
  };
}

/**
 * A TCP proxy to `target` that can go silent, as a host that froze or vanished looks to its
 * clients: after `silence()` nothing is forwarded either way and nothing is closed, and new
 * connections are accepted and never answered.
 */
export async function silentHost(target: URL) {
  let silent = false;
  return { ...(await forwardingProxy(target, () => true, () => silent)), silence: () => void (silent = true) };
}

/** A TCP proxy to `target` that cuts every connection at its array-type read (just after it opened). */
export const cutsEveryTypeRead = (target: URL) => forwardingProxy(target, (chunk) => !chunk.includes("typarray"), () => false);
