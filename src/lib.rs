//! sting-proxy: a pingora reverse-proxy sidecar for Flask apps whose sessions live in Redis
//! (Flask-Session, signed cookies) and whose users log in through Ory Kratos.
//!
//! A map of the crate, in the order a request meets it. Layers only point down:
//! `main` → [`gateway`] / [`ops`] → [`api`] → [`capture`] → [`identity`] → [`store`] →
//! [`config`], and [`observe`] is used by all and uses none of them.
//!
//! - [`gateway`]: the pingora server, its phases, and the proxy's own endpoints.
//! - [`identity`]: who is calling (Flask-Session cookie and Redis value, then Kratos).
//! - [`capture`]: what happened, recorded into Redis off the request path.
//! - [`api`]: the analytics reads, the HTTP API and the dashboard.
//! - [`ops`]: the ops CLI and `check`.
//! - [`store`]: the Redis handle and every key name.
//! - [`config`]: the validated configuration and the matchers compiled from it.
//! - [`observe`]: metrics and the access log.

pub mod api;
pub mod capture;
pub mod config;
pub mod gateway;
pub mod identity;
pub mod observe;
pub mod ops;
pub mod store;
