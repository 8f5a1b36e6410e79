"""Hold COUNT idle unix-socket connections for the memory benchmark (cargo xtask bench).
Usage: hold_connections.py SOCKET_PATH COUNT

Renames itself to `bench-conns` (the tracer's --comm filter), connect()s COUNT connections to a
listener of its own, carries each through one request/response (one byte each way: the tracer
then follows every connection), prints "ready COUNT" and waits. A line on stdin (or EOF, or 120 s)
closes the connected ends, prints "closed" and exits. Both ends live in this process, so COUNT is
bounded by RLIMIT_NOFILE / 2: run several for more."""
import ctypes
import os
import resource
import select
import socket
import sys

PR_SET_NAME = 15
ctypes.CDLL(None).prctl(PR_SET_NAME, b"bench-conns", 0, 0, 0)

path, count = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

try:
    os.unlink(path)
except FileNotFoundError:
    pass
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(128)
listener.settimeout(5)

clients, servers = [], []
try:
    for _ in range(count):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(path)
        s, _ = listener.accept()
        s.settimeout(5)
        c.sendall(b"q")
        s.recv(1)
        s.sendall(b"a")
        c.recv(1)
        clients.append(c)
        servers.append(s)
except OSError as e:
    print(f"failed after {len(clients)} connections: {e}", flush=True)
    os.unlink(path)
    sys.exit(1)

print(f"ready {len(clients)}", flush=True)
select.select([sys.stdin], [], [], 120)
for c in clients:
    c.close()
for s in servers:
    s.close()
os.unlink(path)
print("closed", flush=True)
