//! The pingora side: [`server`] assembly, the `ProxyHttp` phases ([`proxy`]) and the state a
//! request carries through them ([`request_ctx`]), the client's address ([`client_ip`]), the
//! proxy's own endpoints (API, dashboard: [`own_endpoints`]) and the admin listener
//! ([`admin`]: health, readiness, metrics).
//!
//! May use: every layer below (`api`, `capture`, `identity`, `store`, `config`, `observe`).

pub mod admin;
pub mod client_ip;
pub mod own_endpoints;
pub mod proxy;
pub mod request_ctx;
pub mod server;
