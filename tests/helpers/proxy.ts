import { connect, createServer, type Socket } from "node:net";

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
 * array-type read (postgres.js's first query on a new connection) passes to `cut` instead of
 * forwarding it; the upstream side is closed. Later connections pass untouched. `url` is
 * `target` through the proxy; `cuts` counts the connections cut.
 */
export async function typeReadProxy(target: URL, cut: (client: Socket) => void) {
  let cuts = 0;
  const proxy = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    upstream.on("data", (chunk) => client.write(chunk));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.on("close", () => upstream.destroy());
    client.on("data", (chunk) => {
      if (cuts === 0 && chunk.includes("typarray")) {
        cuts++;
        upstream.destroy();
        cut(client);
      } else upstream.write(chunk);
    });
  });
  await new Promise<void>((listening) => proxy.listen(0, "127.0.0.1", listening));
  const url = new URL(target);
  url.port = String((proxy.address() as { port: number }).port);
  return { url: url.toString(), cuts: () => cuts, close: () => void proxy.close() };
}
