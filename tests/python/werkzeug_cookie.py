"""Werkzeug's own answer for a corpus of Cookie headers: which value of the session cookie the
app reads (request.cookies.get, i.e. the first occurrence), as Flask-Session then uses it.

Reads JSON {"name": ..., "headers": [...]} on stdin; prints a JSON list with, per header, the
value (null when absent or empty: Flask-Session starts a new session for both).
"""

import json
import sys

from werkzeug.sansio.http import parse_cookie

spec = json.load(sys.stdin)
out = []
for header in spec["headers"]:
    value = parse_cookie(header).get(spec["name"])
    out.append(value or None)
json.dump(out, sys.stdout)
