#!/usr/bin/env python3
"""Cuts Twilio's official OpenAPI description down to the Messages operations restock calls.

Usage: scripts/trim_twilio_spec.py FULL_SPEC.json > crates/restock-sms/tests/specs/twilio_messages_v2010.json

Keeps the create, list and fetch paths of the Messages resource unchanged, with every component
they reference (followed recursively), the security scheme and the servers, so that a validating
mock (Stoplight Prism) checks restock's Twilio client against the provider's own words.
"""
import json
import sys

PATHS = [
    "/2010-04-01/Accounts/{AccountSid}/Messages.json",
    "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json",
]


def refs(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/"):
                found.add(value)
            else:
                refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)


def main():
    spec = json.load(open(sys.argv[1], encoding="utf-8"))
    paths = {p: spec["paths"][p] for p in PATHS}
    wanted, seen = set(), set()
    refs(paths, wanted)
    components = {"securitySchemes": spec["components"]["securitySchemes"]}
    while wanted - seen:
        ref = sorted(wanted - seen)[0]
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        node = spec["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        refs(node, wanted)
    tags = sorted({t for op in paths.values() for m in op.values() if isinstance(m, dict) for t in m.get("tags", [])})
    out = {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec["servers"],
        "security": spec["security"],
        "tags": [t for t in spec.get("tags", []) if t.get("name") in tags],
        "paths": paths,
        "components": components,
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
