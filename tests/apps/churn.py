"""Connection churn on loopback, bounded in count and time: COUNT short TCP connections (connect,
send a byte, close) to a local listener that accepts and closes them. Exits once every connection
made has been accepted (so none is left unaccepted in the queue at exit); prints the count.
Usage: churn.py COUNT"""
import socket
import sys
import threading
import time

COUNT = int(sys.argv[1])
DEADLINE = time.time() + 120

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(4096)
addr = srv.getsockname()


accepted = 0


def acceptor():
    global accepted
    while True:
        c, _ = srv.accept()
        c.close()
        accepted += 1


threading.Thread(target=acceptor, daemon=True).start()
done = 0
while done < COUNT and time.time() < DEADLINE:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST close: no TIME_WAIT pile-up
    s.connect(addr)
    s.send(b"x")
    s.close()
    done += 1
while accepted < done and time.time() < DEADLINE + 10:
    time.sleep(0.01)
if accepted < done:
    sys.exit(f"only {accepted} of {done} connections accepted")
print(done)
