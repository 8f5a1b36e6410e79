"""A WSGI app that takes APP_SLEEP seconds (default 0.5) per request: one sync worker behind a
small listen backlog is enough to overflow the queue."""
import os
import time

SLEEP = float(os.environ.get("APP_SLEEP", "0.5"))


def app(environ, start_response):
    time.sleep(SLEEP)
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
