//! The live analytics dashboard: static assets embedded in the binary (nothing to deploy,
//! nothing fetched from a CDN), served under `analytics.dashboard_path` with the API's access
//! rules. The page reads the REST API only. Pure (asset lookup); the proxy writes the answer.

use sha2::{Digest, Sha256};

use crate::api::local_response::LocalResponse;

/// Headers for every dashboard answer: scripts and styles only from here (so an injected
/// string cannot run), no framing, no referrer, no MIME sniffing.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the dashboard. `index.html` gets the API prefix filled in at start-up.
const ASSETS: &[Asset] = &[
    Asset { path: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../../assets/dashboard/app.js") },
    Asset { path: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("../../assets/dashboard/app.css") },
    Asset {
        path: "vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/dashboard/vendor/uPlot.iife.min.js"),
    },
    Asset { path: "vendor/uPlot.min.css", content_type: "text/css; charset=utf-8", body: include_str!("../../assets/dashboard/vendor/uPlot.min.css") },
    Asset { path: "vendor/uPlot.LICENSE", content_type: "text/plain; charset=utf-8", body: include_str!("../../assets/dashboard/vendor/uPlot.LICENSE") },
];

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");

/// The dashboard's files, ready to serve.
pub struct Dashboard {
    index: &'static str,
}

impl Dashboard {
    /// `api_prefix` is validated config (`/…/`); it is HTML-escaped anyway.
    pub fn new(api_prefix: &str) -> Self {
        let escaped: String = api_prefix
            .chars()
            .map(|c| match c {
                '&' => "&amp;".to_owned(),
                '<' => "&lt;".to_owned(),
                '>' => "&gt;".to_owned(),
                '"' => "&quot;".to_owned(),
                '\'' => "&#39;".to_owned(),
                c => c.to_string(),
            })
            .collect();
        // Asset URLs carry a hash of the assets, so a browser never runs a cached old script
        // with a new page after an upgrade.
        let mut h = Sha256::new();
        for a in ASSETS {
            h.update(a.body.as_bytes());
        }
        let version = hex::encode(&h.finalize()[..6]);
        let index = INDEX_HTML.replace("{{API_PREFIX}}", &escaped).replace("{{ASSET_VERSION}}", &version);
        // Built once per process; leaked so it can be served as a static body.
        Self { index: Box::leak(index.into_boxed_str()) }
    }

    /// The answer for `rest`, the path below the dashboard prefix (`""` is the page).
    pub fn serve(&self, rest: &str) -> LocalResponse {
        let mut r = match rest {
            "" | "index.html" => LocalResponse::static_body(200, "text/html; charset=utf-8", self.index),
            _ => match ASSETS.iter().find(|a| a.path == rest) {
                Some(a) => {
                    let mut r = LocalResponse::static_body(200, a.content_type, a.body);
                    r.cache_control = "private, max-age=300";
                    r
                }
                None => LocalResponse::text(404, "no such dashboard file\n"),
            },
        };
        r.extra_headers = SECURITY_HEADERS;
        r
    }

    /// Total bytes a browser downloads for one full page load.
    pub fn page_weight(&self) -> usize {
        self.index.len() + ASSETS.iter().filter(|a| !a.path.ends_with("LICENSE")).map(|a| a.body.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_and_its_assets_with_security_headers() {
        let d = Dashboard::new("/api/analytics/");
        let page = d.serve("");
        assert_eq!(page.status, 200);
        let html = std::str::from_utf8(&page.body).unwrap();
        assert!(html.contains("content=\"/api/analytics/\"") && !html.contains("{{"));
        assert!(html.contains("app.js?v="));
        assert!(page.extra_headers.iter().any(|(k, v)| *k == "content-security-policy" && v.contains("script-src 'self'")));
        for a in ASSETS {
            assert_eq!(d.serve(a.path).status, 200, "{}", a.path);
        }
        assert_eq!(d.serve("../Cargo.toml").status, 404);
        assert_eq!(d.serve("vendor/").status, 404);
        assert!(Dashboard::new("/x\"><script>/").serve("").body.windows(8).all(|w| w != b"<script>"));
        assert!(d.page_weight() < 150_000, "{}", d.page_weight());
    }
}
