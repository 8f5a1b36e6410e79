"""A WSGI app that takes APP_SLEEP seconds (default 0.5) per request, plus a uniformly random
extra of up to APP_SLEEP_SPREAD seconds: one sync worker behind a small listen backlog is enough
to overflow the queue; the spread gives varied latencies."""
import os
import random
import time

SLEEP = float(os.environ.get("APP_SLEEP", "0.5"))
SPREAD = float(os.environ.get("APP_SLEEP_SPREAD", "0"))
# Optional: after sleeping, hold each request until this file exists (tests use it to make a
# burst's outcome independent of how fast the machine delivers it).
GATE = os.environ.get("APP_GATE")
# Optional: a directory in which each request, as it starts, leaves a file named
# "<worker pid>-<monotonic ns>" (tests wait on it instead of guessing when the app got a request).
STARTED_DIR = os.environ.get("APP_STARTED_DIR")


def app(environ, start_response):
    if STARTED_DIR and os.path.isdir(STARTED_DIR):
        open(os.path.join(STARTED_DIR, f"{os.getpid()}-{time.monotonic_ns()}"), "w").close()
    time.sleep(SLEEP + random.uniform(0, SPREAD))
    while GATE and not os.path.exists(GATE):
        time.sleep(0.01)
    body = b"ok\n"
    # The upstream connection's client port, so tests can join nginx's log line
    # ($upstream_http_x_remote_port) to the tracer's record of that TCP connection.
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
               ("X-Remote-Port", environ.get("REMOTE_PORT", ""))]
    start_response("200 OK", headers)
    return [body]
