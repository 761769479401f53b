"""A threaded HTTP server on 127.0.0.1 that serves images and misbehaves on request, for offline download tests.

Used by nbs/02_download.ipynb, tests/test_download.py and bench/download.py. Routes (NAME is a file added with `add`):

    /img/NAME            the file, with its Content-Type and Content-Length
    /status/CODE/...     that HTTP status
    /loop/...            a redirect to itself, forever
    /redirect/K/NAME     K redirects, then /img/NAME
    /to/QUOTED-URL       one redirect to any URL (quoted with urllib.parse.quote(url, safe=''))
    /slow/NAME           headers at once, then one byte every `trickle` seconds
    /hang/...            accepts, then never answers
    /reset/...           closes the connection with a TCP reset before answering
    /truncated/NAME      says the full length, sends half, closes
    /lying/NAME          says Content-Length: 100, sends the whole file and more, closes
    /endless/...         no Content-Length, an endless body until the client goes away
    /bigclaim/NAME       says Content-Length: 10 GB
    /html/...            an HTML page served as image/jpeg
    /empty/...           200 with no body
    /any/...             the file `default` whatever the rest of the path says

Every request waits `latency` seconds first. `hits` counts requests by path; `agents` keeps the User-Agents seen.
"""
import mimetypes, socket, struct, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

__all__ = ['ImageServer']


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 drops connections when 32 clients arrive together
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args): pass

    def _head(self, code, ctype='image/jpeg', length=None, close=False, extra=()):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        if length is not None: self.send_header('Content-Length', str(length))
        for k, v in extra: self.send_header(k, v)
        if close:
            self.send_header('Connection', 'close')
            self.close_connection = True
        self.end_headers()

    def _send(self, data, ctype='image/jpeg', code=200):
        self._head(code, ctype, len(data))
        self.wfile.write(data)

    def do_GET(self):
        srv = self.server.owner
        path = self.path.split('?')[0]
        with srv.lock:
            srv.hits[path] += 1
            srv.agents.add(self.headers.get('User-Agent', ''))
        if srv.latency: time.sleep(srv.latency)
        parts = path.lstrip('/').split('/', 1)
        route, rest = parts[0], (parts[1] if len(parts) > 1 else '')
        try: getattr(self, f'r_{route}', self.r_missing)(rest)
        except (BrokenPipeError, ConnectionResetError): self.close_connection = True

    def _file(self, name):
        data = self.server.owner.files.get(unquote(name))
        if data is None: self.r_missing(name)
        return data

    def r_missing(self, rest): self._send(b'<html>not found</html>', 'text/html', 404)

    def r_img(self, name):
        data = self._file(name)
        if data is not None: self._send(data, mimetypes.guess_type(name)[0] or 'application/octet-stream')

    def r_any(self, rest): self.r_img(self.server.owner.default)

    def r_status(self, rest):
        code = int(rest.split('/')[0])
        self._send(f'<html>status {code}</html>'.encode(), 'text/html', code)

    def _redirect(self, location):
        self._head(302, 'text/html', 0, extra=[('Location', location)])

    def r_loop(self, rest): self._redirect(self.path)

    def r_redirect(self, rest):
        k, name = rest.split('/', 1)
        self._redirect(f'/redirect/{int(k) - 1}/{name}' if int(k) > 1 else f'/img/{name}')

    def r_to(self, rest): self._redirect(unquote(rest))

    def r_slow(self, name):
        data = self._file(name)
        if data is None: return
        self._head(200, length=len(data), close=True)
        for b in data:
            if self.server.owner.stopping.wait(self.server.owner.trickle): return
            self.wfile.write(bytes([b])); self.wfile.flush()

    def r_hang(self, rest):
        self.server.owner.stopping.wait(60)
        self.close_connection = True

    def r_reset(self, rest):
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        self.connection.close()
        self.close_connection = True

    def r_truncated(self, name):
        data = self._file(name)
        if data is None: return
        self._head(200, length=len(data), close=True)
        self.wfile.write(data[:len(data) // 2])

    def r_lying(self, name):
        data = self._file(name)
        if data is None: return
        self._head(200, length=100, close=True)
        self.wfile.write(data + b'\0' * 1_000_000)

    def r_endless(self, rest):
        self._head(200, close=True)
        chunk = b'\xff\xd8\xff\xe0' + b'\0' * 65532
        try:
            while not self.server.owner.stopping.is_set(): self.wfile.write(chunk)
        except OSError: pass

    def r_bigclaim(self, name):
        self._head(200, length=10_000_000_000, close=True)
        self.wfile.write((self._file(name) or b'')[:1000])

    def r_html(self, rest): self._send(b'<!doctype html><html><body>a picture of a bear</body></html>', 'image/jpeg')

    def r_empty(self, rest): self._send(b'', 'image/jpeg')


class ImageServer:
    "A threaded HTTP server on 127.0.0.1 serving `files` ({name: bytes}) and faults; use as a context manager."
    def __init__(self, files=None, latency=0.0, trickle=0.5, default=None):
        self.files, self.latency, self.trickle = dict(files or {}), latency, trickle
        self.default = default or next(iter(self.files), None)
        self.hits, self.agents, self.lock, self.stopping = Counter(), set(), threading.Lock(), threading.Event()
        self.httpd = _Server(('127.0.0.1', 0), _Handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)

    def add(self, name, data):
        "Serve `data` as /img/`name`."
        self.files[name] = data
        if self.default is None: self.default = name

    def url(self, path=''):
        "Full URL of `path` on this server."
        return f'http://127.0.0.1:{self.port}/{path.lstrip("/")}'

    def start(self):
        self.thread.start(); return self

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown(); self.httpd.server_close()

    def __enter__(self): return self.start()
    def __exit__(self, *exc): self.stop()
