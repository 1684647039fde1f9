"""Example upstream app for sting-proxy.

An ordinary Flask app with server-side sessions kept in Redis by Flask-Session,
configured like the "seed" deployment that sting-proxy sits in front of:

    SESSION_TYPE='redis', SESSION_USE_SIGNER=True, SESSION_PERMANENT=True,
    PERMANENT_SESSION_LIFETIME=24h, SESSION_REDIS=redis.from_url(REDIS_URL)

SESSION_REDIS can also be a Redis Cluster or a Sentinel-managed master (REDIS_MODE
below); Flask-Session only ever sends GET, SET (with EX) and DEL of one key, which
a cluster client routes by slot.

The app knows nothing about the proxy. The integration tests run it behind
sting-proxy to check what gets forwarded (see /echo) and that the proxy can read
the session that this app wrote to Redis. It works unchanged with
Flask-Session 0.8.0 (stores msgpack) and 0.6.0 (stores pickle); see
tests/python/requirements-fs08.txt and requirements-fs06.txt.

Configuration (environment):
    SESSION_SECRET_KEY   Flask SECRET_KEY, signs the session id cookie
                         (default 'dev-secret-change-me')
    REDIS_MODE           how REDIS_URL is read (default 'standalone'):
                           standalone  one server: redis.from_url(REDIS_URL)
                           cluster     Redis Cluster: REDIS_URL is a comma-separated
                                       list of seed nodes, e.g.
                                       redis://10.0.0.1:7000,redis://10.0.0.2:7000
                           sentinel    the master that Redis Sentinel names:
                                       redis+sentinel://host:port,host:port/<master name>
                                       (sentinel port 26379 unless given)
    REDIS_URL            default redis://127.0.0.1:6379/0
    SESSION_KEY_PREFIX   Redis key prefix (default 'sting:session:')
    SESSION_COOKIE_NAME  default 'session'
    APP_HOST, APP_PORT   listen address for `python app.py` (127.0.0.1:5000)

Run with Flask's threaded dev server (`python app.py`) or with gunicorn
(`gunicorn app:app`).
"""

import hashlib
import json
import os
import time
import warnings
from datetime import timedelta
from urllib.parse import urlsplit

import redis
import redis.cluster
import redis.sentinel
from flask import Flask, Response, jsonify, redirect, request, session
from markupsafe import escape
from flask_session import Session

SECRET_KEY = os.environ.get("SESSION_SECRET_KEY", "dev-secret-change-me")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_MODE = os.environ.get("REDIS_MODE", "standalone").strip().lower()
SESSION_KEY_PREFIX = os.environ.get("SESSION_KEY_PREFIX", "sting:session:")
SESSION_COOKIE_NAME = os.environ.get("SESSION_COOKIE_NAME", "session")
APP_HOST = os.environ.get("APP_HOST", "127.0.0.1")
APP_PORT = int(os.environ.get("APP_PORT", "5000"))

CHUNK = 64 * 1024
PATTERN = b"0123456789"


def cluster_client(url_list):
    """A RedisCluster seeded with every node of the comma-separated `url_list`
    (`redis://[user:password@]host:port`, or just `host:port`); credentials and TLS
    (`rediss://`) are taken from the first seed. Reads the slot map now, so a cluster
    that cannot be reached fails the start."""
    seeds = [urlsplit(u if "://" in u else f"redis://{u}") for u in (s.strip() for s in url_list.split(",")) if u]
    if not seeds:
        raise SystemExit("REDIS_MODE=cluster needs at least one seed node in REDIS_URL")
    first = seeds[0]
    return redis.cluster.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode(s.hostname, s.port or 6379) for s in seeds],
        username=first.username,
        password=first.password,
        ssl=first.scheme == "rediss",
    )


def sentinel_client(url):
    """The master that the sentinels of `redis+sentinel://host[:port],host[:port]/<name>`
    name, followed across failovers (a new connection asks the sentinels again)."""
    rest = url.split("://", 1)[1] if url.startswith("redis+sentinel://") else None
    hosts, _, name = (rest or "").partition("/")
    name = name.strip("/")
    if not hosts or not name:
        raise SystemExit(f"REDIS_MODE=sentinel needs REDIS_URL=redis+sentinel://host:port,.../<master name>, not {url!r}")
    sentinels = []
    for h in hosts.split(","):
        host, _, port = h.strip().rpartition(":") if ":" in h else (h.strip(), "", "26379")
        sentinels.append((host, int(port)))
    return redis.sentinel.Sentinel(sentinels, socket_timeout=1.0).master_for(name, socket_timeout=5.0)


def redis_client(url, mode):
    """The client for REDIS_URL as REDIS_MODE says to read it."""
    if mode == "standalone":
        return redis.from_url(url)
    if mode == "cluster":
        return cluster_client(url)
    if mode == "sentinel":
        return sentinel_client(url)
    raise SystemExit(f"REDIS_MODE must be standalone, cluster or sentinel, not {mode!r}")


def install_session_client(interface, client):
    """Makes Flask-Session use `client`. 0.8 accepts only a redis.Redis as SESSION_REDIS and
    replaces anything else (a RedisCluster) with Redis() on localhost, with a RuntimeWarning;
    so the client is set on the interface afterwards (0.8 keeps it in .client, 0.6 in .redis)."""
    for attr in ("client", "redis"):
        if hasattr(interface, attr):
            setattr(interface, attr, client)


REDIS = redis_client(REDIS_URL, REDIS_MODE)

app = Flask(__name__)
app.config.update(
    SECRET_KEY=SECRET_KEY,
    SESSION_TYPE="redis",
    # deprecated in Flask-Session 0.8 (warns), still signs; SESSION_USE_SIGNER=0 for the
    # proxy's unsigned-mode tests
    SESSION_USE_SIGNER=os.environ.get("SESSION_USE_SIGNER", "1") != "0",
    SESSION_PERMANENT=True,
    PERMANENT_SESSION_LIFETIME=timedelta(hours=24),
    SESSION_KEY_PREFIX=SESSION_KEY_PREFIX,
    SESSION_COOKIE_NAME=SESSION_COOKIE_NAME,
    SESSION_REDIS=REDIS,
)
with warnings.catch_warnings():
    # Flask-Session 0.8's complaint about a RedisCluster; install_session_client answers it.
    warnings.filterwarnings("ignore", message="No valid Redis instance", category=RuntimeWarning)
    Session(app)
install_session_client(app.session_interface, REDIS)

if os.environ.get("SEED_INAPP_ANALYTICS") == "1":
    # For bench/run only: the seed's in-app analytics (SessionAnalytics.track_page_view), the
    # approach sting-proxy replaces. Each page view reads the session's JSON record, adds one,
    # and writes it back with SETEX: a read-modify-write, so concurrent requests lose updates.
    _seed_redis = REDIS

    @app.before_request
    def seed_track_page_view():
        if request.method != "GET":
            return
        sid = hashlib.sha1(request.cookies.get(SESSION_COOKIE_NAME, "").encode()).hexdigest()
        key = f"seed:analytics:session:{sid}"
        raw = _seed_redis.get(key)
        data = json.loads(raw) if raw else {"page_views": 0}
        data["page_views"] += 1
        data["last_page"] = request.path
        data["last_seen"] = time.time()
        _seed_redis.setex(key, 86400, json.dumps(data))


def page(title, body):
    html = (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{title}</title></head>\n<body><h1>{title}</h1>\n{body}\n</body></html>\n"
    )
    return Response(html, mimetype="text/html")


@app.get("/")
def home():
    return page("Home", "<p>Public home page of the sting-proxy example app.</p>")


@app.get("/healthz")
def healthz():
    return Response("ok", mimetype="text/plain")


@app.route("/echo", methods=["GET", "POST"])
@app.route("/echo/<path:rest>", methods=["GET", "POST"])
def echo(rest=None):
    """Show exactly what reached the app (as forwarded by the proxy)."""
    return jsonify(
        method=request.method,
        path=request.path,
        raw_uri=request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI"),
        query=request.query_string.decode("latin-1"),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=request.get_data().decode("utf-8", "replace"),
        session=dict(session),
        sid=getattr(session, "sid", None),
    )


@app.get("/login")
def login_form():
    """A plain form for trying the demo in a browser (log in as role=admin to open /analytics/)."""
    nxt = request.args.get("next", "/")
    if not nxt.startswith("/") or nxt.startswith("//"):
        nxt = "/"
    return page(
        "Log in",
        '<form method="post" action="/login">'
        '<label>user id <input name="user_id" required></label> '
        '<label>role <select name="role"><option>user</option><option>admin</option></select></label> '
        f'<input type="hidden" name="next" value="{escape(nxt)}"> <button>Log in</button></form>',
    )


@app.route("/login", methods=["POST"])
def login():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        data = request.form
    user_id = data.get("user_id")
    if user_id in (None, ""):
        return jsonify(ok=False, error="user_id required"), 400
    session["user_id"] = user_id
    for field in ("email", "role"):
        if data.get(field) not in (None, ""):
            session[field] = data.get(field)
    nxt = data.get("next", "")
    if request.form and nxt.startswith("/") and not nxt.startswith("//"):
        return redirect(nxt)  # the browser form: back where the proxy sent us from
    return jsonify(ok=True, user_id=user_id)


@app.route("/logout", methods=["GET", "POST"])
def logout():
    # An empty, modified session makes Flask-Session delete the Redis key and
    # send a Set-Cookie that expires the cookie.
    session.clear()
    return jsonify(ok=True)


@app.get("/anon")
def anon():
    """Create/refresh an anonymous session (has a sid, no user)."""
    session["visits"] = session.get("visits", 0) + 1
    return jsonify(visits=session["visits"], session=dict(session))


# The next three are meant to be protected by the proxy's rules; the app itself
# does not check anything.
@app.get("/dashboard")
def dashboard():
    return page("Dashboard", f"<p>Hello {session.get('user_id', 'stranger')}.</p>")


@app.get("/api/data")
def api_data():
    return jsonify(data=[1, 2, 3, "four", {"five": 5}])


@app.get("/admin/panel")
def admin_panel():
    return page("Admin panel", "<p>Admins only (enforced by the proxy).</p>")


@app.route("/upload", methods=["POST"])
def upload():
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = request.stream.read(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        digest.update(chunk)
    return jsonify(bytes=total, sha256=digest.hexdigest())


@app.get("/download")
def download():
    """Stream N bytes of b'0123456789' repeated; no Content-Length."""
    try:
        n = max(0, int(request.args.get("bytes", "0")))
    except ValueError:
        return jsonify(ok=False, error="bytes must be an integer"), 400
    buf = PATTERN * (CHUNK // len(PATTERN) + 2)

    def generate():
        sent = 0
        while sent < n:
            size = min(CHUNK, n - sent)
            start = sent % len(PATTERN)
            yield buf[start:start + size]
            sent += size

    return Response(generate(), mimetype="application/octet-stream")


@app.get("/set-cookie-test")
def set_cookie_test():
    resp = jsonify(ok=True)
    resp.set_cookie("a", "1", path="/")
    resp.set_cookie("b", "2", httponly=True)
    return resp


@app.get("/self-service/logout")
def kratos_style_logout():
    """Stands in for Kratos's logout flow when Kratos is served on the same origin: it answers
    by expiring the `ory_kratos_session` cookie, which is all the proxy needs to see."""
    resp = jsonify(ok=True)
    resp.delete_cookie("ory_kratos_session")
    return resp


@app.get("/slow")
def slow():
    try:
        ms = max(0, int(request.args.get("ms", "0")))
    except ValueError:
        return jsonify(ok=False, error="ms must be an integer"), 400
    time.sleep(ms / 1000.0)
    return jsonify(ok=True, slept_ms=ms)


if __name__ == "__main__":
    app.run(host=APP_HOST, port=APP_PORT, threaded=True, debug=False, use_reloader=False)
