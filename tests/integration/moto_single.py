"""moto_single.py - moto's server answering ONE request at a time (tests only).

moto's DynamoDB is not atomic under concurrent requests (200 concurrent
conditional debits against 10 credits: 11 to 13 succeed), real DynamoDB is.
Served one request at a time, the concurrency tests prove Koumpa's conditions
rather than moto's races. Usage: python3 moto_single.py HOST PORT
It exits when its stdin ends: the test process that started it holds the other end of the pipe,
so a test process killed on a timeout (no exit handler runs) does not leave moto behind.
"""
import os
import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, run_simple


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    threading.Thread(target=lambda: (sys.stdin.buffer.read(), os._exit(0)), daemon=True).start()
    app = DomainDispatcherApplication(create_backend_app)
    # 200 clients connect at once: a backlog of 128 (werkzeug's) drops SYNs that then wait 1 s and more
    BaseWSGIServer.request_queue_size = 1024
    run_simple(host, port, app, threaded=False, processes=1, use_reloader=False, use_debugger=False)


if __name__ == "__main__":
    main()
