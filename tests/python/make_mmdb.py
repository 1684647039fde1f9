"""Write a tiny GeoLite2-City-shaped MaxMind database for the geo tests.

Usage: make_mmdb.py OUT_PATH [ASN_OUT_PATH]

Writes OUT_PATH and, if given, a GeoLite2-ASN-shaped ASN_OUT_PATH
(`autonomous_system_number`, `autonomous_system_organization`), and nothing else. The records carry only the fields
sting-proxy reads (`country.iso_code`, `city.names.en`, `location.latitude` /
`longitude`) plus the geoname ids
and English country names a real GeoLite2-City record has, so the Rust reader
is exercised against the real layout rather than a simplified one.

The networks are documentation/test ranges (RFC 5737, RFC 3849) and the two
ranges MaxMind's own test databases use (81.2.69.0/24, 89.160.20.0/24), so no
real address is ever mapped to a made-up place.

Installed into .venv/fs08 by scripts/setup-python (mmdb-writer, netaddr).
"""

import sys

from mmdb_writer import MMDBWriter, MmdbF64, MmdbU16, MmdbU32
from netaddr import IPSet

# (network, country ISO code, English country name, English city name or None,
#  (latitude, longitude) or None)
NETWORKS = [
    ("81.2.69.0/24", "GB", "United Kingdom", "London", (51.5142, -0.0931)),
    ("89.160.20.0/24", "SE", "Sweden", "Linköping", (58.4167, 15.6167)),
    ("203.0.113.0/24", "DE", "Germany", "Munich", (48.1374, 11.5755)),
    # Country-only on purpose: real GeoLite2 data has many such records, and the
    # reader must return the country without inventing a city.
    ("198.51.100.0/24", "US", "United States", None, None),
    ("2001:db8::/32", "JP", "Japan", "Tokyo", (35.6897, 139.6922)),
]


# (network, AS number, AS organisation): private-use AS numbers (RFC 6996).
ASN_NETWORKS = [
    ("81.2.69.0/24", 64500, "Example Home Broadband"),
    ("81.2.70.0/23", 64500, "Example Home Broadband"),
    ("203.0.113.0/24", 64501, "Example Hosting GmbH"),
]


def record(iso_code, country_name, city_name, point):
    rec = {"country": {"iso_code": iso_code, "names": {"en": country_name}}}
    if city_name is not None:
        rec["city"] = {"names": {"en": city_name}}
    if point is not None:
        # GeoLite2-City's layout: location.latitude / longitude (doubles) and the accuracy radius.
        rec["location"] = {"latitude": MmdbF64(point[0]), "longitude": MmdbF64(point[1]), "accuracy_radius": MmdbU16(20)}
    return rec


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: make_mmdb.py OUT_PATH [ASN_OUT_PATH]", file=sys.stderr)
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
    for network, iso_code, country_name, city_name, point in NETWORKS:
        writer.insert_network(IPSet([network]), record(iso_code, country_name, city_name, point))
    writer.to_db_file(out_path)
    if len(argv) == 3:
        asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN", languages=["en"],
                         description={"en": "sting-proxy test ASN database (not real data)"})
        for network, number, org in ASN_NETWORKS:
            asn.insert_network(IPSet([network]), {"autonomous_system_number": MmdbU32(number), "autonomous_system_organization": org})
        asn.to_db_file(argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
