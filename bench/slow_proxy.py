"""Loopback TCP proxy adding a fixed delay before each request chunk reaches the emulator, to
model the latency of a real AWS endpoint (benchmark only)."""
import socket
import sys
import threading
import time

listen_port, upstream_port, delay_ms = (int(a) for a in sys.argv[1:4])


def pump(src, dst, delay):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if delay:
                time.sleep(delay)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(64)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    threading.Thread(target=pump, args=(client, upstream, delay_ms / 1000), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, 0), daemon=True).start()
