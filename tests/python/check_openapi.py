#!/usr/bin/env python3
"""Checks recorded analytics API responses against the OpenAPI 3.1 document.

    check_openapi.py [--require-all] [--verbose] SPEC.yaml RESPONSES.json

SPEC.yaml is docs/openapi.yaml. RESPONSES.json is a JSON list of recorded responses:

    [{"path": "/api/analytics/sessions/active?x=1", "status": 200,
      "body": <parsed JSON, or null>, "content_type": "application/json"}, ...]

An entry may also carry "method" (default "GET"; "HEAD" is checked as GET when the spec has no
HEAD operation). Two answers are not tied to an operation, and the spec lists each once in
`components/responses`: a 404 for a path that matches no path template is checked against
`NotFound` (an unknown endpoint under the prefix), and a 405 the operation does not declare
itself against `MethodNotAllowed` (the API's operations are all GET). Any other status on an
undeclared path, method or status is a failure.

Steps:
1. The document is validated as OpenAPI 3.1 (openapi-spec-validator), and every response
   `example` in it is validated against its own schema.
2. For each recorded response: the server URL's path and the query are stripped, the path is
   matched against the path templates (literal segments beat parameters, so `/sessions/active`
   is not `/sessions/{session_id}`), the response object for the status is found (exact, `4XX`,
   then `default`), the content type must be declared, and a JSON body is validated against
   the media type's schema (JSON Schema 2020-12, `#/components/...` references resolved against
   the whole document, `format` checked).

Exit status 0 when everything conforms, 1 otherwise (2 for usage or unreadable input). With
`--require-all`, every operation that declares a 200 must have a recorded 200.
"""

import argparse
import json
import re
import sys
from urllib.parse import unquote, urlsplit

import yaml
from jsonschema import Draft202012Validator
from jsonschema_path import SchemaPath
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_URI = "urn:sting-proxy:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_ERRORS_PER_BODY = 20
MAX_MESSAGE = 300


def pointer_escape(segment):
    return str(segment).replace("~", "~0").replace("/", "~1")


def pointer(*segments):
    return "".join("/" + pointer_escape(s) for s in segments)


def pointer_get(doc, ptr):
    node = doc
    for raw in ptr.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


class Spec:
    """The OpenAPI document, its path templates, and cached body validators."""

    def __init__(self, doc):
        self.doc = doc
        resource = DRAFT202012.create_resource(doc)
        self.registry = Registry().with_resource(SPEC_URI, resource)
        self._validators = {}
        self.bases = []
        for server in doc.get("servers") or [{"url": "/"}]:
            base = urlsplit(server.get("url", "/")).path.rstrip("/")
            self.bases.append(base)
        self.bases.sort(key=len, reverse=True)
        self.templates = [(t, self._compile(t)) for t in doc.get("paths", {})]

    @staticmethod
    def _compile(template):
        """Per segment: (rank, regex); rank 2 = literal, 1 = mixed, 0 = a whole parameter."""
        out = []
        for seg in template.strip("/").split("/") if template.strip("/") else []:
            if "{" not in seg:
                out.append((2, re.compile(re.escape(seg) + r"\Z")))
            else:
                parts = re.split(r"(\{[^}/]+\})", seg)
                rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts if p)
                whole = re.fullmatch(r"\{[^}/]+\}", seg) is not None
                out.append((0 if whole else 1, re.compile(rx + r"\Z")))
        return out

    def operations(self):
        """(template, method, operation, pointer) for every operation."""
        for template, item in self.doc.get("paths", {}).items():
            for method in HTTP_METHODS:
                if method in item:
                    yield template, method, item[method], pointer("paths", template, method)

    def strip_base(self, raw_path):
        """The path relative to the server URL, or None when outside every server URL."""
        path = urlsplit(raw_path).path
        for base in self.bases:
            if path == base or path.startswith(base + "/"):
                rest = path[len(base):].strip("/")
                return "/" + rest
        return None

    def match(self, rel_path):
        """The best path template for a relative path, or None."""
        segs = [unquote(s) for s in rel_path.strip("/").split("/")] if rel_path.strip("/") else []
        best = None
        for template, compiled in self.templates:
            if len(compiled) != len(segs):
                continue
            if all(rx.match(s) for (_, rx), s in zip(compiled, segs)):
                score = tuple(rank for rank, _ in compiled)
                if best is None or score > best[0]:
                    best = (score, template)
        return best[1] if best else None

    def deref(self, obj, ptr):
        """Follows local `$ref`s of non-schema objects (responses, parameters)."""
        seen = set()
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            if not ref.startswith("#") or ref in seen:
                raise ValueError(f"cannot follow $ref {ref!r} at {ptr}")
            seen.add(ref)
            ptr = ref[1:]
            obj = pointer_get(self.doc, ptr)
        return obj, ptr

    def validator(self, schema_ptr):
        v = self._validators.get(schema_ptr)
        if v is None:
            v = Draft202012Validator(
                {"$ref": f"{SPEC_URI}#{schema_ptr}"},
                registry=self.registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            self._validators[schema_ptr] = v
        return v

    def body_errors(self, schema_ptr, body):
        """Readable errors of `body` against the schema at `schema_ptr`, deepest path first."""
        errors = sorted(self.validator(schema_ptr).iter_errors(body), key=lambda e: (list(map(str, e.absolute_path)), e.message))
        out = []
        for e in errors[:MAX_ERRORS_PER_BODY]:
            where = pointer(*e.absolute_path) or "/"
            rule = "/".join(str(s) for s in e.absolute_schema_path)
            msg = e.message if len(e.message) <= MAX_MESSAGE else e.message[:MAX_MESSAGE] + "..."
            out.append(f"at {where}: {msg} (schema: {rule})")
        if len(errors) > MAX_ERRORS_PER_BODY:
            out.append(f"... and {len(errors) - MAX_ERRORS_PER_BODY} more")
        return out


def is_json_media(media):
    return media == "application/json" or media.endswith("+json")


def media_lookup(content, media):
    """The declared media type matching `media` (exact, then `type/*`, then `*/*`)."""
    declared = {k.lower(): k for k in content}
    for candidate in (media, media.split("/")[0] + "/*", "*/*"):
        if candidate in declared:
            return declared[candidate]
    return None


def validate_document(doc):
    """Problems with the document itself: OpenAPI 3.1 validity, then its response examples."""
    problems = []
    if not str(doc.get("openapi", "")).startswith("3.1"):
        problems.append(f"openapi is {doc.get('openapi')!r}, expected 3.1.x")
    try:
        for err in OpenAPIV31SpecValidator(SchemaPath.from_dict(doc)).iter_errors():
            where = pointer(*(getattr(err, "absolute_path", None) or []))
            problems.append(f"OpenAPI 3.1: {err.message}" + (f" (at {where})" if where else ""))
    except Exception as e:  # the validator's later checks assume a well-formed document
        problems.append(f"OpenAPI 3.1: validation stopped on a malformed document ({type(e).__name__}: {e})")
    if problems:
        return problems

    spec = Spec(doc)
    response_sets = [(pointer("components", "responses"), doc.get("components", {}).get("responses", {}))]
    for _, _, op, op_ptr in spec.operations():
        response_sets.append((op_ptr + "/responses", op.get("responses", {})))
    for base_ptr, responses in response_sets:
        for status, resp in responses.items():
            if "$ref" in resp:
                continue  # checked where it is defined
            for media, mt in (resp.get("content") or {}).items():
                mt_ptr = f"{base_ptr}{pointer(str(status), 'content', media)}"
                if "schema" not in mt:
                    continue
                examples = []
                if "example" in mt:
                    examples.append(("example", mt["example"]))
                for name, ex in (mt.get("examples") or {}).items():
                    ex, _ = spec.deref(ex, f"{mt_ptr}/examples/{pointer_escape(name)}")
                    if "value" in ex:
                        examples.append((f"examples/{name}", ex["value"]))
                for label, value in examples:
                    for msg in spec.body_errors(mt_ptr + "/schema", value):
                        problems.append(f"{mt_ptr}/{label} does not match its schema: {msg}")
    return problems


def check_entry(spec, entry, exercised, got_200):
    """Problems with one recorded response (empty when it conforms) and a one-line label."""
    path = entry.get("path")
    status = entry.get("status")
    method = str(entry.get("method") or "GET").lower()
    label = f"{method.upper()} {path} -> {status}"
    if not isinstance(path, str) or not isinstance(status, int):
        return label, [f"malformed entry (needs string 'path' and integer 'status'): {json.dumps(entry)[:200]}"]

    rel = spec.strip_base(path)
    if rel is None:
        return label, [f"path is outside the server URL(s) {spec.bases}"]
    shared = spec.doc.get("components", {}).get("responses", {})
    template = spec.match(rel)
    if template is None and not (status == 404 and "NotFound" in shared):
        return label, [f"path {rel} matches no path in the spec"]
    label = f"{method.upper()} {path} -> {status} [{template or 'unknown endpoint'}]"
    item = spec.doc["paths"][template] if template is not None else {}

    op_method = method if method in item else ("get" if method == "head" and "get" in item else None)
    if template is None:
        resp, resp_ptr = spec.deref(shared["NotFound"], pointer("components", "responses", "NotFound"))
    elif op_method is None:
        if status == 405 and "MethodNotAllowed" in shared:
            resp, resp_ptr = spec.deref(shared["MethodNotAllowed"], pointer("components", "responses", "MethodNotAllowed"))
        else:
            return label, [f"method {method.upper()} is not declared for {template}"]
    else:
        op = item[op_method]
        exercised.add((template, op_method))
        responses = op.get("responses", {})
        op_ptr = pointer("paths", template, op_method, "responses")
        key = next((k for k in (str(status), f"{status // 100}XX", f"{status // 100}xx", "default") if k in responses), None)
        if key is not None:
            resp, resp_ptr = spec.deref(responses[key], op_ptr + pointer(key))
        elif status == 405 and "MethodNotAllowed" in shared:
            resp, resp_ptr = spec.deref(shared["MethodNotAllowed"], pointer("components", "responses", "MethodNotAllowed"))
        else:
            return label, [f"status {status} is not declared for {op_method.upper()} {template} (declared: {sorted(map(str, responses))})"]
        if status == 200:
            got_200.add((template, op_method))

    body = entry.get("body")
    content = resp.get("content") or {}
    media = str(entry.get("content_type") or "").split(";")[0].strip().lower()
    if not content:
        if body is not None:
            return label, [f"{resp_ptr} declares no content, but a body was recorded"]
        return label, []
    if not media:
        if body is None:
            return label, [f"no content type recorded; {resp_ptr} declares {sorted(content)}"]
        media = "application/json"
    declared = media_lookup(content, media)
    if declared is None:
        return label, [f"content type {media!r} is not declared by {resp_ptr} (declared: {sorted(content)})"]
    mt = content[declared]
    schema_ptr = resp_ptr + pointer("content", declared, "schema")
    if is_json_media(media):
        if body is None:
            if method == "head":
                return label, []
            return label, [f"JSON response recorded without a body ({resp_ptr})"]
    elif body is None:
        return label, []  # e.g. the YAML document: its content type is declared, nothing to parse
    if "schema" not in mt:
        return label, []
    errors = spec.body_errors(schema_ptr, body)
    return label, [f"body does not match #{schema_ptr}: {m}" for m in errors]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="the OpenAPI 3.1 document (YAML or JSON)")
    ap.add_argument("responses", help="JSON list of recorded responses")
    ap.add_argument("--require-all", action="store_true", help="fail unless every operation declaring 200 has a recorded 200")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every response checked")
    args = ap.parse_args(argv)

    try:
        with open(args.spec, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        with open(args.responses, encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, yaml.YAMLError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not isinstance(doc, dict):
        print(f"error: {args.spec} is not a mapping", file=sys.stderr)
        return 2
    if not isinstance(recorded, list):
        print(f"error: {args.responses} must hold a JSON list", file=sys.stderr)
        return 2

    problems = validate_document(doc)
    if problems:
        print(f"FAIL {args.spec} is not a valid OpenAPI 3.1 document:")
        for p in problems:
            print(f"  {p}")
        return 1

    spec = Spec(doc)
    exercised, got_200 = set(), set()
    failures = 0
    for i, entry in enumerate(recorded):
        if not isinstance(entry, dict):
            label, errs = f"entry {i}", [f"not an object: {json.dumps(entry)[:200]}"]
        else:
            label, errs = check_entry(spec, entry, exercised, got_200)
        if errs:
            failures += 1
            print(f"FAIL #{i} {label}")
            for e in errs:
                print(f"  {e}")
        elif args.verbose:
            print(f"ok   #{i} {label}")

    ops = [(t, m) for t, m, _, _ in spec.operations()]
    missing = [f"{m.upper()} {t}" for t, m in ops if (t, m) not in exercised]
    print(f"validated {len(recorded)} responses; operations exercised: {len(ops) - len(missing)} of {len(ops)}; not exercised: {missing}")

    ok = failures == 0
    if failures:
        print(f"FAIL {failures} of {len(recorded)} responses do not conform to {args.spec}")
    if args.require_all:
        without_200 = [f"{m.upper()} {t}" for t, m, op, _ in spec.operations() if "200" in map(str, op.get("responses", {})) and (t, m) not in got_200]
        if without_200:
            ok = False
            print(f"FAIL --require-all: no recorded 200 for {without_200}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
