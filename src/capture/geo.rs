//! Client IP → country ISO code and city name, from a MaxMind-format `.mmdb` file
//! (GeoLite2-City / GeoIP2-City layout: `country.iso_code`, `city.names.en`).
//!
//! I/O happens once, in [`GeoDb::open`], which reads the whole file into memory; lookups
//! are pure and cheap (a tree walk plus decoding two strings), so the proxy can do one per
//! session without blocking. Lookups never fail: an address the database does not cover,
//! a private address, or a record in an unexpected shape all give [`Location::default()`],
//! because a missing location must never cost a request.
//!
//! A Country database (GeoLite2-Country) works too; it simply has no cities.
//!
//! An ASN database (GeoLite2-ASN layout: `autonomous_system_number`,
//! `autonomous_system_organization`) is optional and separate ([`AsnDb`]): the network an
//! address belongs to, for the session fingerprint.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{MaxMindDbError, Reader};
use serde::Deserialize;

/// An opened `.mmdb` file. `Send + Sync`: share one behind an `Arc`.
#[derive(Debug)]
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

/// Where an address is, as far as the database knows. Both parts are optional: many
/// records carry a country but no city.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Location {
    /// ISO 3166-1 alpha-2, upper case ("GB").
    pub country: Option<String>,
    /// English city name ("London").
    pub city: Option<String>,
    /// Latitude and longitude (degrees), for the impossible-travel detector; only for records
    /// with a city.
    pub point: Option<(f64, f64)>,
    /// The autonomous system, `AS{number} {organisation}` (from the ASN database, if any).
    pub asn: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read GeoIP database {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a usable MaxMind database: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
}

impl GeoDb {
    /// Reads and validates the database header. The data section is not verified up front
    /// (that walks the whole file, seconds for a full GeoLite2-City); a corrupt record is
    /// instead caught by the decoder at lookup time and treated as "unknown".
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        // Read the file ourselves rather than via `Reader::open_readfile` so a missing or
        // unreadable file is reported as such, apart from a file that is not an mmdb.
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read { path: path.to_owned(), source })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoError::Invalid { path: path.to_owned(), source })?;
        Ok(GeoDb { reader, path: path.to_owned() })
    }

    /// The file this database was read from, for logs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's own type string ("GeoLite2-City"), for logs.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    pub fn lookup(&self, ip: IpAddr) -> Location {
        // Dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d. MaxMind databases
        // keep IPv4 data under the IPv4 subtree, and not every writer aliases ::ffff:0:0/96
        // to it (mmdb-writer does not), so look such addresses up as the IPv4 they are.
        let ip = ip.to_canonical();
        // Errors here are an IPv6 address against an IPv4-only database, or a corrupt
        // record: either way the location is unknown, which is what the caller records.
        let Ok(found) = self.reader.lookup(ip) else {
            return Location::default();
        };
        match found.decode::<Record<'_>>() {
            Ok(Some(record)) => record.into_location(),
            Ok(None) | Err(_) => Location::default(),
        }
    }
}

/// An opened ASN `.mmdb` (GeoLite2-ASN or compatible).
#[derive(Debug)]
pub struct AsnDb(GeoDb);

#[derive(Deserialize)]
struct AsnRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

impl AsnDb {
    pub fn open(path: &Path) -> Result<AsnDb, GeoError> {
        GeoDb::open(path).map(AsnDb)
    }

    /// `AS{number} {organisation}` (organisation trimmed and bounded like a city name), or
    /// `None` when the database does not cover the address.
    pub fn lookup(&self, ip: IpAddr) -> Option<String> {
        let found = self.0.reader.lookup(ip.to_canonical()).ok()?;
        let record = found.decode::<AsnRecord<'_>>().ok()??;
        let number = record.autonomous_system_number?;
        Some(match record.autonomous_system_organization.and_then(city_name) {
            Some(org) => format!("AS{number} {org}"),
            None => format!("AS{number}"),
        })
    }
}

/// Just the fields we keep. Decoding into this rather than `maxminddb::geoip2::City` skips
/// everything else (subdivisions, translations) without allocating, and a malformed field we
/// do not use cannot blank the answer.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Country<'a>>,
    #[serde(borrow, default)]
    city: Option<City<'a>>,
    #[serde(default)]
    location: Option<Coordinates>,
}

#[derive(Deserialize)]
struct Coordinates {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct Country<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct City<'a> {
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

impl Record<'_> {
    fn into_location(self) -> Location {
        let has_city = self.city.as_ref().and_then(|c| c.names.as_ref()).and_then(|n| n.en).is_some();
        Location {
            country: self.country.and_then(|c| c.iso_code).and_then(country_code),
            city: self.city.and_then(|c| c.names).and_then(|n| n.en).and_then(city_name),
            // A point without a city is a country's centre (or a guess): comparing two of
            // those, or one with a city, makes "impossible travel" out of a network switch.
            point: self.location.filter(|_| has_city).and_then(|l| match (l.latitude, l.longitude) {
                (Some(lat), Some(lon)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => Some((lat, lon)),
                _ => None,
            }),
            asn: None,
        }
    }
}

/// Country codes become part of analytics keys, so only a well-formed alpha-2 code is
/// kept; anything else in a third-party database is treated as unknown.
fn country_code(raw: &str) -> Option<String> {
    let is_alpha2 = raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_alphabetic());
    is_alpha2.then(|| raw.to_ascii_uppercase())
}

/// The longest city (or AS organisation) name kept. The longest real English city names are well under 100
/// bytes; the cap only stops a bogus database from bloating every session record.
const MAX_CITY_BYTES: usize = 128;

fn city_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    let fits = !name.is_empty() && name.len() <= MAX_CITY_BYTES;
    fits.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.mmdb");
        let err = GeoDb::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn garbage_and_empty_files_are_invalid_and_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let inputs: [&[u8]; 4] = [
            b"",
            b"this is not a maxmind database",
            // The metadata marker with nothing valid after it.
            b"\xab\xcd\xefMaxMind.com",
            b"\x00\x00\x00\x00\xab\xcd\xefMaxMind.com\xe0",
        ];
        for (i, bytes) in inputs.iter().enumerate() {
            let path = dir.path().join(format!("bad-{i}.mmdb"));
            std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
            let err = GeoDb::open(&path).unwrap_err();
            assert!(matches!(err, GeoError::Invalid { .. }), "input {i}: {err:?}");
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        }
    }

    #[test]
    fn a_directory_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = GeoDb::open(dir.path()).unwrap_err();
        assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
    }

    #[test]
    fn country_codes_must_be_alpha2() {
        assert_eq!(country_code("GB").as_deref(), Some("GB"));
        assert_eq!(country_code("se").as_deref(), Some("SE"));
        assert_eq!(country_code(""), None);
        assert_eq!(country_code("GBR"), None);
        assert_eq!(country_code("G1"), None);
        assert_eq!(country_code("é"), None);
    }

    #[test]
    fn city_names_are_trimmed_and_bounded() {
        assert_eq!(city_name("Linköping").as_deref(), Some("Linköping"));
        assert_eq!(city_name("  London ").as_deref(), Some("London"));
        assert_eq!(city_name("   "), None);
        assert_eq!(city_name(&"x".repeat(MAX_CITY_BYTES + 1)), None);
    }

    #[test]
    fn record_without_city_keeps_country() {
        let record = Record { country: Some(Country { iso_code: Some("US") }), city: None, location: None };
        assert_eq!(record.into_location(), Location { country: Some("US".into()), city: None, point: None, asn: None });
    }
}
