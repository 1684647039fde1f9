"""Sign session ids exactly as Flask-Session does (SESSION_USE_SIGNER=True).

Reads a JSON array of {"secret": str, "sid": str} from stdin and prints a JSON
array of the matching cookie values ("<sid>.<signature>"), in order.

The value comes from Flask-Session's own code path: the `_sign(app, sid)` method
of a RedisSessionInterface built by `flask_session.Session` (present in 0.6 and
0.8). If a version lacks it, its signer factory is used (`_get_signer` in 0.8,
the name-mangled `__get_signer` in 0.6), and only if neither exists a hand-built
`itsdangerous.Signer(secret, salt="flask-session", key_derivation="hmac")`.
The path used is printed to stderr.

Run it with a venv from scripts/setup-python, e.g.
    echo '[{"secret":"s","sid":"abc"}]' | .venv/fs08/bin/python tests/python/sign_cookies.py
"""

import json
import sys
import warnings


def build_interface():
    """Return (app, session_interface) configured like the example app."""
    import redis
    from flask import Flask
    from flask_session import Session

    app = Flask("sign_cookies")
    app.config.update(
        SECRET_KEY="placeholder",
        SESSION_TYPE="redis",
        SESSION_USE_SIGNER=True,
        SESSION_PERMANENT=True,
        # Never connected to: redis-py connects lazily and nothing is stored.
        SESSION_REDIS=redis.Redis(host="127.0.0.1", port=1),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Session(app)
    return app, app.session_interface


def make_signer_fn():
    """Return (fn(secret, sid) -> cookie value, description of the path)."""
    import flask_session

    version = getattr(flask_session, "__version__", "?")
    try:
        app, iface = build_interface()
    except Exception as exc:  # pragma: no cover - only if the API changed
        app, iface = None, None
        print(f"sign_cookies: could not build interface: {exc!r}", file=sys.stderr)

    if iface is not None and callable(getattr(iface, "_sign", None)):
        def sign(secret, sid):
            app.secret_key = secret
            return iface._sign(app, sid)

        return sign, f"flask_session {version}: {type(iface).__name__}._sign(app, sid)"

    if iface is not None:
        for attr in ("_get_signer", "_SessionInterface__get_signer"):
            factory = getattr(iface, attr, None)
            if callable(factory):
                def sign(secret, sid, factory=factory):
                    app.secret_key = secret
                    return factory(app).sign(sid.encode("utf-8")).decode("utf-8")

                return sign, f"flask_session {version}: {type(iface).__name__}.{attr}(app).sign"

    from itsdangerous import Signer

    def sign(secret, sid):
        signer = Signer(secret, salt="flask-session", key_derivation="hmac")
        return signer.sign(sid.encode("utf-8")).decode("utf-8")

    return sign, f"FALLBACK itsdangerous.Signer(secret, salt='flask-session', key_derivation='hmac') (flask_session {version} exposes no signer)"


def main():
    items = json.load(sys.stdin)
    if not isinstance(items, list):
        raise SystemExit("sign_cookies: stdin must be a JSON array")
    sign, how = make_signer_fn()
    print(f"sign_cookies: using {how}", file=sys.stderr)
    out = [sign(item["secret"], item["sid"]) for item in items]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
