//! End-to-end behaviour of the two analytics classifiers: `geo` against a real `.mmdb` file
//! written by the mmdb-writer PyPI package (tests/python/make_mmdb.py, run in the fs08 venv
//! that `scripts/setup-python` makes), and `device` on real browser and bot User-Agents.
//!
//! I/O: runs one Python process and writes files only under a fresh temporary directory.

mod common;

use std::net::IpAddr;

use common::make_mmdb;

use sting_proxy::capture::device::{self, DeviceKind};
use sting_proxy::capture::geo::{GeoDb, GeoError, Location};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Where the generated database puts its cities (tests/python/make_mmdb.py).
fn point_of(city: Option<&str>) -> Option<(f64, f64)> {
    match city? {
        "London" => Some((51.5142, -0.0931)),
        "Linköping" => Some((58.4167, 15.6167)),
        "Munich" => Some((48.1374, 11.5755)),
        "Tokyo" => Some((35.6897, 139.6922)),
        _ => None,
    }
}

fn at(country: Option<&str>, city: Option<&str>) -> Location {
    Location { country: country.map(str::to_owned), city: city.map(str::to_owned), point: point_of(city), asn: None }
}

#[test]
fn geo_lookups_against_a_generated_geolite2_city_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_mmdb(dir.path());
    let db = GeoDb::open(&path).expect("open generated mmdb");
    assert_eq!(db.database_type(), "GeoLite2-City");

    let cases = [
        ("81.2.69.1", at(Some("GB"), Some("London"))),
        ("81.2.69.255", at(Some("GB"), Some("London"))),
        ("89.160.20.128", at(Some("SE"), Some("Linköping"))),
        ("203.0.113.7", at(Some("DE"), Some("Munich"))),
        // Country-only record: no city is invented.
        ("198.51.100.20", at(Some("US"), None)),
        ("2001:db8::1", at(Some("JP"), Some("Tokyo"))),
        ("2001:db8:ffff::1", at(Some("JP"), Some("Tokyo"))),
        // IPv4-mapped IPv6, as a dual-stack listener reports IPv4 clients.
        ("::ffff:81.2.69.1", at(Some("GB"), Some("London"))),
        ("::ffff:198.51.100.1", at(Some("US"), None)),
        // Not in the database: unknown, not an error.
        ("8.8.8.8", Location::default()),
        ("81.2.70.1", Location::default()),
        ("2001:db9::1", Location::default()),
        // Private, loopback and unspecified addresses.
        ("10.0.0.1", Location::default()),
        ("192.168.1.1", Location::default()),
        ("127.0.0.1", Location::default()),
        ("::1", Location::default()),
        ("0.0.0.0", Location::default()),
        ("::", Location::default()),
    ];
    for (addr, want) in cases {
        assert_eq!(db.lookup(ip(addr)), want, "lookup {addr}");
    }
}

#[test]
fn opening_a_missing_or_garbage_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.mmdb");
    let err = GeoDb::open(&missing).unwrap_err();
    assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, b"GIF89a definitely not a MaxMind database").unwrap();
    let err = GeoDb::open(&garbage).unwrap_err();
    assert!(matches!(err, GeoError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains(&garbage.display().to_string()), "{err}");

    // A real database cut short keeps its metadata but loses the tree it describes.
    let truncated = dir.path().join("truncated.mmdb");
    let bytes = std::fs::read(make_mmdb(dir.path())).unwrap();
    std::fs::write(&truncated, &bytes[bytes.len() / 2..]).unwrap();
    let err = GeoDb::open(&truncated).unwrap_err();
    assert!(err.to_string().contains(&truncated.display().to_string()), "{err}");
}

#[test]
fn device_classification_of_real_user_agents() {
    let chrome_mac = device::parse(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
         (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    );
    assert_eq!(chrome_mac.browser, "Chrome");
    assert_eq!(chrome_mac.os, "Mac OSX");
    assert_eq!(chrome_mac.kind, DeviceKind::Desktop);
    assert_eq!(chrome_mac.kind.as_str(), "desktop");

    let safari_iphone = device::parse(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 \
         (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    );
    assert_eq!(safari_iphone.browser, "Safari");
    assert_eq!(safari_iphone.os, "iPhone");
    assert_eq!(safari_iphone.kind.as_str(), "mobile");
    assert!(safari_iphone.kind.is_mobile());

    let firefox_linux = device::parse("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0");
    assert_eq!(firefox_linux.browser, "Firefox");
    assert_eq!(firefox_linux.os, "Linux");
    assert_eq!(firefox_linux.kind.as_str(), "desktop");

    let googlebot = device::parse("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
    assert_eq!(googlebot.browser, "Googlebot");
    assert_eq!(googlebot.kind.as_str(), "bot");
    assert!(googlebot.is_bot());
}
