"""Write a tiny GeoLite2-City-shaped MaxMind database for the geo tests.

Usage: make_mmdb.py OUT_PATH

Writes one file (OUT_PATH) and nothing else. The records carry only the fields
sting-proxy reads (`country.iso_code`, `city.names.en`) plus the geoname ids
and English country names a real GeoLite2-City record has, so the Rust reader
is exercised against the real layout rather than a simplified one.

The networks are documentation/test ranges (RFC 5737, RFC 3849) and the two
ranges MaxMind's own test databases use (81.2.69.0/24, 89.160.20.0/24), so no
real address is ever mapped to a made-up place.

Installed into .venv/fs08 by scripts/setup-python (mmdb-writer, netaddr).
"""

import sys

from mmdb_writer import MMDBWriter
from netaddr import IPSet

# (network, country ISO code, English country name, English city name or None)
NETWORKS = [
    ("81.2.69.0/24", "GB", "United Kingdom", "London"),
    ("89.160.20.0/24", "SE", "Sweden", "Linköping"),
    ("203.0.113.0/24", "DE", "Germany", "Munich"),
    # Country-only on purpose: real GeoLite2 data has many such records, and the
    # reader must return the country without inventing a city.
    ("198.51.100.0/24", "US", "United States", None),
    ("2001:db8::/32", "JP", "Japan", "Tokyo"),
]


def record(iso_code, country_name, city_name):
    rec = {"country": {"iso_code": iso_code, "names": {"en": country_name}}}
    if city_name is not None:
        rec["city"] = {"names": {"en": city_name}}
    return rec


def main(argv):
    if len(argv) != 2:
        print("usage: make_mmdb.py OUT_PATH", file=sys.stderr)
        return 2
    out_path = argv[1]

    # ip_version 6 with ipv4_compatible=True stores IPv4 networks under ::/96,
    # which is where MaxMind readers (including the Rust `maxminddb` crate)
    # look for IPv4 addresses in an IPv6 tree. IPv4-mapped addresses
    # (::ffff:a.b.c.d) are *not* aliased by this writer; sting-proxy's geo
    # module canonicalises them to IPv4 before the lookup instead.
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-City",
        languages=["en"],
        description={"en": "sting-proxy test database (not real GeoIP data)"},
    )
    for network, iso_code, country_name, city_name in NETWORKS:
        writer.insert_network(IPSet([network]), record(iso_code, country_name, city_name))
    writer.to_db_file(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
