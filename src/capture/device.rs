//! User-Agent → device facts (browser, OS, desktop/mobile/tablet/bot) for session analytics.
//!
//! Pure: no I/O, no global state beyond woothee's compiled regexes. Any string is accepted
//! and nothing here panics; the header is client-controlled, so the answer is a best guess
//! for counting sessions, never something to make security decisions on.
//!
//! Classification is woothee's (a maintained UA dataset) with three corrections woothee
//! does not make: it has no notion of a tablet, it calls command-line HTTP clients
//! "misc" rather than automation, and it misses bots that dress up as a real browser
//! (`... Chrome/120 Safari/537.36 (compatible; PetalBot; ...)`), which it reports as
//! Chrome on a PC.

use crate::capture::daily_cap::DailyCap;
use woothee::parser::Parser;

/// Only this many bytes of the header are looked at. Real UAs are well under 300 bytes;
/// the cap keeps a hostile 100 KB header from costing a hundred regex scans over 100 KB.
pub const MAX_UA_BYTES: usize = 512;

/// The longest browser name taken from a bot's own product token. Bot names end up as
/// Redis hash fields, so a client must not be able to make them arbitrarily long.
const MAX_BOT_NAME_BYTES: usize = 32;

/// Browser and OS name when woothee could not determine them.
pub const UNKNOWN: &str = "unknown";

/// Substrings (matched ASCII-case-insensitively) that mark automation woothee misses.
/// `bot` covers Googlebot-alikes (PetalBot, AhrefsBot, ...); see [`bot_token`] for the
/// one phone brand it would otherwise catch.
const BOT_MARKERS: &[&str] = &["bot", "spider", "crawl", "curl/", "python-requests", "go-http-client", "wget"];

/// What a User-Agent says about the client, reduced to short stable names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Browser or agent name as woothee spells it ("Chrome", "Safari", "Googlebot"), the
    /// bot's own product token for bots woothee misses ("curl", "PetalBot"), or "unknown".
    pub browser: String,
    /// OS name as woothee spells it ("Mac OSX", "iPhone", "Windows 10", "Android"), or
    /// "unknown".
    pub os: String,
    pub kind: DeviceKind,
}

/// The coarse device class analytics group sessions by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    /// Appliances (consoles, TVs), feed readers, HTTP libraries woothee knows, and
    /// anything unrecognised.
    Other,
}

impl DeviceKind {
    /// The lower-case name stored in Redis; stable across releases.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Desktop => "desktop",
            DeviceKind::Mobile => "mobile",
            DeviceKind::Tablet => "tablet",
            DeviceKind::Bot => "bot",
            DeviceKind::Other => "other",
        }
    }

    /// Phones and tablets: the "mobile" share in analytics counts both.
    pub fn is_mobile(self) -> bool {
        matches!(self, DeviceKind::Mobile | DeviceKind::Tablet)
    }
}

impl Device {
    pub fn is_bot(&self) -> bool {
        self.kind == DeviceKind::Bot
    }

    fn unknown() -> Device {
        Device { browser: UNKNOWN.to_owned(), os: UNKNOWN.to_owned(), kind: DeviceKind::Other }
    }
}

/// Classifies a User-Agent header value. Never fails: unrecognised input is
/// `Other` with browser and OS "unknown".
/// Whether `joined` is `parts` joined with `sep` (`Chrome|Linux|desktop`,
/// `Chrome / Linux / desktop`), decided without formatting it: this runs per request.
pub fn is_joined(joined: &str, sep: &str, parts: [&str; 3]) -> bool {
    let mut rest = joined;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            match rest.strip_prefix(sep) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        match rest.strip_prefix(p) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

pub fn parse(user_agent: &str) -> Device {
    let ua = cap(user_agent).trim();
    if ua.is_empty() {
        return Device::unknown();
    }

    // woothee answers None for input it recognises nothing in; that is "unknown", not an error.
    let Some(found) = Parser::new().parse(ua) else {
        return match bot_token(ua) {
            Some(name) => Device { browser: name, os: UNKNOWN.to_owned(), kind: DeviceKind::Bot },
            None => Device::unknown(),
        };
    };

    let mut browser = known_or_unknown(found.name);
    let os = known_or_unknown(found.os);
    let mut kind = match found.category {
        "pc" => DeviceKind::Desktop,
        "smartphone" | "mobilephone" => mobile_or_tablet(ua, &os),
        "crawler" => DeviceKind::Bot,
        // "appliance", "misc" and woothee's "UNKNOWN".
        _ => DeviceKind::Other,
    };

    if let Some(name) = bot_token(ua) {
        // woothee's own crawler names are curated ("Googlebot", "bingbot"); keep them, but
        // its catch-all "misc crawler" says less than the bot's own product token.
        if kind != DeviceKind::Bot || browser == "misc crawler" {
            browser = name;
        }
        kind = DeviceKind::Bot;
    }

    Device { browser, os, kind }
}

/// woothee has no tablet category: iPads and Android tablets come back as "smartphone".
/// Tablets are told apart the way sites conventionally do: the iPad says so, Android
/// tablets omit the "Mobile" token phones send (Google's guidance to browser vendors),
/// and Firefox for Android and a few others say "Tablet".
fn mobile_or_tablet(ua: &str, os: &str) -> DeviceKind {
    let is_tablet = os == "iPad" || ua.contains("iPad") || (ua.contains("Android") && !ua.contains("Mobile")) || ua.contains("Tablet");
    if is_tablet {
        DeviceKind::Tablet
    } else {
        DeviceKind::Mobile
    }
}

/// If the UA carries a bot marker, the product token it sits in ("PetalBot", "curl",
/// "python-requests"), cut to a bounded length; falls back to the marker itself.
fn bot_token(ua: &str) -> Option<String> {
    let lower = ua.to_ascii_lowercase();
    // ASCII lower-casing keeps byte offsets, so positions in `lower` are positions in `ua`.
    let start = BOT_MARKERS.iter().filter_map(|marker| find_marker(&lower, marker)).min()?;

    let is_token_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let bytes = ua.as_bytes();
    let mut begin = start;
    while begin > 0 && is_token_byte(bytes[begin - 1]) {
        begin -= 1;
    }
    let mut end = start;
    while end < bytes.len() && is_token_byte(bytes[end]) {
        end += 1;
    }
    // Token bytes are ASCII, so both ends are char boundaries and `get` cannot fail; it is
    // still `get` so that a mistake here degrades to a generic name rather than a panic.
    let token = ua.get(begin..end).unwrap_or("");
    let token = if token.is_empty() { "bot" } else { token };
    Some(token.chars().take(MAX_BOT_NAME_BYTES).collect())
}

/// Position of the first real occurrence of `marker` in the lower-cased UA.
fn find_marker(lower: &str, marker: &str) -> Option<usize> {
    lower.match_indices(marker).map(|(at, _)| at).find(|&at| {
        // Cubot is a phone brand ("Android 10; CUBOT_X30"); its users are people.
        !(marker == "bot" && at >= 2 && lower.get(at - 2..at) == Some("cu"))
    })
}

fn known_or_unknown(name: &str) -> String {
    if name.is_empty() || name == woothee::woothee::VALUE_UNKNOWN {
        UNKNOWN.to_owned()
    } else {
        name.to_owned()
    }
}

/// The first [`MAX_UA_BYTES`] bytes of `ua`, shortened to a char boundary.
fn cap(ua: &str) -> &str {
    if ua.len() <= MAX_UA_BYTES {
        return ua;
    }
    let mut end = MAX_UA_BYTES;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    &ua[..end]
}

/// Distinct bot names recorded per UTC day; later new ones are recorded as [`OTHER_BOT`].
pub const MAX_BOT_NAMES_PER_DAY: usize = 100;

/// The browser name of bots beyond [`MAX_BOT_NAMES_PER_DAY`].
pub const OTHER_BOT: &str = "other bot";

/// Bot names are the one browser name a client chooses freely (`xyz123bot`), and each becomes
/// a member of the day's `browsers` breakdown. This admits the first
/// [`MAX_BOT_NAMES_PER_DAY`] distinct names of a UTC day and renames the rest (see
/// [`DailyCap`]).
#[derive(Debug)]
pub struct BotNames(DailyCap);

impl Default for BotNames {
    fn default() -> Self {
        Self(DailyCap::new(MAX_BOT_NAMES_PER_DAY))
    }
}

impl BotNames {
    /// Moves to the UTC day of `ts_ms` if it is later than the current one; returns true then
    /// (devices renamed on an earlier day may now be admitted: drop cached ones).
    pub fn roll(&mut self, ts_ms: i64) -> bool {
        self.0.roll(ts_ms)
    }

    /// Applies the day's cap to a freshly parsed `device`.
    pub fn cap(&mut self, device: &mut Device) {
        if device.is_bot() && !self.0.admit(&device.browser) {
            device.browser = OTHER_BOT.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const CHROME_ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X710) \
        AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const CHROME_ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) \
        AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";
    const FIREFOX_ANDROID_TABLET: &str = "Mozilla/5.0 (Android 14; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0";
    const EDGE_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51";
    const PETALBOT: &str = "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like \
        Gecko) Mobile Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)";
    const CUBOT_PHONE: &str = "Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";

    fn facts(ua: &str) -> (String, String, DeviceKind) {
        let d = parse(ua);
        (d.browser, d.os, d.kind)
    }

    fn owned(browser: &str, os: &str, kind: DeviceKind) -> (String, String, DeviceKind) {
        (browser.to_owned(), os.to_owned(), kind)
    }

    #[test]
    fn desktop_browsers() {
        assert_eq!(facts(CHROME_MAC), owned("Chrome", "Mac OSX", DeviceKind::Desktop));
        assert_eq!(facts(FIREFOX_LINUX), owned("Firefox", "Linux", DeviceKind::Desktop));
        assert_eq!(facts(EDGE_WINDOWS), owned("Edge", "Windows 10", DeviceKind::Desktop));
    }

    #[test]
    fn phones_are_mobile() {
        assert_eq!(facts(SAFARI_IPHONE), owned("Safari", "iPhone", DeviceKind::Mobile));
        assert_eq!(facts(CHROME_ANDROID_PHONE), owned("Chrome", "Android", DeviceKind::Mobile));
        assert!(parse(SAFARI_IPHONE).kind.is_mobile());
    }

    #[test]
    fn tablets_are_told_apart_from_phones() {
        // woothee itself says "smartphone" for all three.
        assert_eq!(facts(SAFARI_IPAD), owned("Safari", "iPad", DeviceKind::Tablet));
        assert_eq!(facts(CHROME_ANDROID_TABLET), owned("Chrome", "Android", DeviceKind::Tablet));
        assert_eq!(facts(FIREFOX_ANDROID_TABLET).2, DeviceKind::Tablet);
        assert!(DeviceKind::Tablet.is_mobile());
        assert!(!DeviceKind::Desktop.is_mobile());
    }

    #[test]
    fn crawlers_woothee_knows_keep_its_name() {
        let d = parse(GOOGLEBOT);
        assert_eq!(d.browser, "Googlebot");
        assert_eq!(d.kind, DeviceKind::Bot);
        assert!(d.is_bot());
    }

    #[test]
    fn http_clients_and_disguised_bots_are_bots() {
        assert_eq!(facts("curl/8.5.0").0, "curl");
        assert!(parse("curl/8.5.0").is_bot());
        assert_eq!(facts("python-requests/2.31.0").0, "python-requests");
        assert!(parse("python-requests/2.31.0").is_bot());
        assert_eq!(facts("Go-http-client/1.1").0, "Go-http-client");
        assert!(parse("Go-http-client/1.1").is_bot());
        assert!(parse("Wget/1.21.4").is_bot());
        assert!(parse("Mozilla/5.0 (compatible; SomeSpider/3.0)").is_bot());
        assert!(parse("my-crawler").is_bot());
        // Case-insensitive.
        assert!(parse("CURL/8.0").is_bot());

        let petal = parse(PETALBOT);
        assert_eq!(petal.browser, "PetalBot");
        assert_eq!(petal.kind, DeviceKind::Bot);
    }

    #[test]
    fn a_phone_brand_containing_bot_is_not_a_bot() {
        assert_eq!(facts(CUBOT_PHONE), owned("Chrome", "Android", DeviceKind::Mobile));
    }

    #[test]
    fn empty_and_unrecognised_are_other_unknown() {
        let unknown = owned("unknown", "unknown", DeviceKind::Other);
        assert_eq!(facts(""), unknown);
        assert_eq!(facts("   "), unknown);
        assert_eq!(facts("-"), unknown);
        assert_eq!(facts("zzzz"), unknown);
    }

    #[test]
    fn huge_input_is_capped_and_harmless() {
        let garbage: String = (0..100 * 1024).map(|i| (b'!' + (i % 90) as u8) as char).collect();
        let d = parse(&garbage);
        assert!(d.browser.len() <= 64 && d.os.len() <= 64);

        // A real UA followed by 100 KB of padding is still recognised from its first bytes.
        let padded = format!("{CHROME_MAC} {}", "x".repeat(100 * 1024));
        assert_eq!(facts(&padded), owned("Chrome", "Mac OSX", DeviceKind::Desktop));

        // Multi-byte characters straddling the cap must not split.
        let wide = "é".repeat(MAX_UA_BYTES);
        assert_eq!(parse(&wide).kind, DeviceKind::Other);
        assert!(cap(&wide).len() <= MAX_UA_BYTES);
    }

    #[test]
    fn bot_names_per_day_are_capped() {
        let mut names = BotNames::default();
        let day = 1_796_043_900_000;
        assert!(names.roll(day));
        for i in 0..MAX_BOT_NAMES_PER_DAY {
            let mut d = parse(&format!("name{i}bot/1.0"));
            names.cap(&mut d);
            assert_eq!(d.browser, format!("name{i}bot"));
        }
        let mut late = parse("latecomerbot/1.0");
        names.cap(&mut late);
        assert_eq!(late.browser, OTHER_BOT);
        let mut admitted = parse("name7bot/2.0");
        names.cap(&mut admitted);
        assert_eq!(admitted.browser, "name7bot", "an admitted name keeps its name");
        let mut person = parse("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36");
        names.cap(&mut person);
        assert_eq!(person.browser, "Chrome", "browsers are not bots and are never capped");
        assert!(!names.roll(day - 1000), "a late event from the previous day does not go back");
        assert!(names.roll(day + 86_400_000), "a new day is reported");
        let mut tomorrow = parse("latecomerbot/1.0");
        names.cap(&mut tomorrow);
        assert_eq!(tomorrow.browser, "latecomerbot", "each day admits its own names");
    }

    #[test]
    fn bot_names_are_bounded() {
        let long = format!("{}bot", "a".repeat(100));
        let d = parse(&long);
        assert!(d.is_bot());
        assert_eq!(d.browser, "a".repeat(MAX_BOT_NAME_BYTES));

        // A marker past the cap is not seen at all.
        assert!(!parse(&format!("{}bot", "a".repeat(MAX_UA_BYTES))).is_bot());
    }

    #[test]
    fn kind_names_are_stable() {
        let names: Vec<_> =
            [DeviceKind::Desktop, DeviceKind::Mobile, DeviceKind::Tablet, DeviceKind::Bot, DeviceKind::Other].into_iter().map(DeviceKind::as_str).collect();
        assert_eq!(names, ["desktop", "mobile", "tablet", "bot", "other"]);
    }

    proptest! {
        #[test]
        fn never_panics_and_names_are_bounded(ua in any::<String>()) {
            let d = parse(&ua);
            prop_assert!(!d.browser.is_empty());
            prop_assert!(!d.os.is_empty());
            prop_assert!(d.browser.len() <= 64);
        }

        #[test]
        fn never_panics_on_ua_shaped_input(
            ua in "(Mozilla/5\\.0 )?\\(([A-Za-z0-9 ._;/]|iPad|iPhone|Android|Mobile|Windows NT|Mac OS X|bot|Linux|Tablet){0,20}\\)[ -~]{0,80}"
        ) {
            let _ = parse(&ua);
        }
    }
}
