"""An upstream that reads each request's header and closes the connection without answering:
nginx logs "upstream prematurely closed connection" and answers 502, and no worker dies (one
process, one thread). Usage: close_server.py HOST PORT"""
import socket
import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((HOST, PORT))
listener.listen(64)
while True:
    conn, _ = listener.accept()
    conn.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    # The whole request was read: a plain FIN (not a RST for unread data), no response.
    conn.close()
