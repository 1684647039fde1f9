//! Answers the proxy writes itself (denials, redirects, errors), never forwarded to the app.
//! I/O: writes to the downstream session.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// A complete small response.
pub struct LocalResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    pub location: Option<String>,
    pub retry_after: Option<u32>,
    /// `no-store` unless a static asset says otherwise.
    pub cache_control: &'static str,
    pub extra_headers: &'static [(&'static str, &'static str)],
}

impl LocalResponse {
    fn new(status: u16, content_type: &'static str, body: Bytes) -> Self {
        Self { status, content_type, body, location: None, retry_after: None, cache_control: "no-store", extra_headers: &[] }
    }

    pub fn json(status: u16, value: serde_json::Value) -> Self {
        Self::new(status, "application/json", Bytes::from(value.to_string()))
    }

    pub fn redirect(location: String) -> Self {
        let mut r = Self::new(302, "text/plain; charset=utf-8", Bytes::from_static(b"Redirecting\n"));
        r.location = Some(location);
        r
    }

    pub fn text(status: u16, body: &'static str) -> Self {
        Self::static_body(status, "text/plain; charset=utf-8", body)
    }

    pub fn static_body(status: u16, content_type: &'static str, body: &'static str) -> Self {
        Self::new(status, content_type, Bytes::from_static(body.as_bytes()))
    }

    pub async fn write(self, session: &mut Session, request_id: &str) -> Result<()> {
        let mut h = ResponseHeader::build(self.status, Some(6 + self.extra_headers.len()))?;
        h.insert_header("content-type", self.content_type)?;
        h.insert_header("content-length", self.body.len().to_string())?;
        h.insert_header("cache-control", self.cache_control)?;
        for (k, v) in self.extra_headers {
            h.insert_header(*k, *v)?;
        }
        h.insert_header(crate::identity::headers::X_REQUEST_ID, request_id)?;
        if let Some(loc) = self.location {
            h.insert_header("location", loc)?;
        }
        if let Some(s) = self.retry_after {
            h.insert_header("retry-after", s.to_string())?;
        }
        // An unread request body would corrupt the next request on this connection.
        let req = session.req_header();
        let has_body = req.headers.get("transfer-encoding").is_some() || req.headers.get("content-length").is_some_and(|v| v.as_bytes() != b"0");
        if has_body {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(self.body), true).await?;
        Ok(())
    }
}
