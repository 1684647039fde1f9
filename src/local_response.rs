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
}

impl LocalResponse {
    pub fn json(status: u16, value: serde_json::Value) -> Self {
        Self { status, content_type: "application/json", body: Bytes::from(value.to_string()), location: None, retry_after: None }
    }

    pub fn redirect(location: String) -> Self {
        Self { status: 302, content_type: "text/plain; charset=utf-8", body: Bytes::from_static(b"Redirecting\n"), location: Some(location), retry_after: None }
    }

    pub fn text(status: u16, body: &'static str) -> Self {
        Self::static_body(status, "text/plain; charset=utf-8", body)
    }

    pub fn static_body(status: u16, content_type: &'static str, body: &'static str) -> Self {
        Self { status, content_type, body: Bytes::from_static(body.as_bytes()), location: None, retry_after: None }
    }

    pub async fn write(self, session: &mut Session, request_id: &str) -> Result<()> {
        let mut h = ResponseHeader::build(self.status, Some(6))?;
        h.insert_header("content-type", self.content_type)?;
        h.insert_header("content-length", self.body.len().to_string())?;
        h.insert_header("cache-control", "no-store")?;
        h.insert_header(crate::headers::X_REQUEST_ID, request_id)?;
        if let Some(loc) = self.location {
            h.insert_header("location", loc)?;
        }
        if let Some(s) = self.retry_after {
            h.insert_header("retry-after", s.to_string())?;
        }
        // An unread request body would corrupt the next request on this connection.
        let req = session.req_header();
        let has_body = req.headers.get("transfer-encoding").is_some()
            || req.headers.get("content-length").is_some_and(|v| v.as_bytes() != b"0");
        if has_body {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(self.body), true).await?;
        Ok(())
    }
}
