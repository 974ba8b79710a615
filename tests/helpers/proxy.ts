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
