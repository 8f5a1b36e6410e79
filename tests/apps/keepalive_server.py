"""An HTTP/1.1 keep-alive upstream (Python's standard http.server) that closes a connection after
IDLE seconds without a request: the idle timeout that makes a proxy's reused connection race
with the upstream's close. Usage: keepalive_server.py PORT IDLE_SECONDS"""
import http.server
import socketserver
import sys

PORT = int(sys.argv[1])
IDLE = float(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE  # socket timeout while waiting for the next request: the idle close

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("127.0.0.1", PORT), Handler).serve_forever()
