//! Reads: the analytics [`queries`] shared by the HTTP API and the ops CLI, the request
//! vocabulary both parse ([`endpoint`]), the HTTP API's access rules ([`analytics`]), the
//! [`dashboard`], the live active-sessions feed ([`live_active`]), and the small responses the
//! proxy writes itself ([`local_response`], used by the gateway's denials too), and one user's
//! data exported or erased ([`user_data`]).
//!
//! May use: `capture` (bucket constants of what it wrote), `identity`, `store`, `config`,
//! `observe`.

pub mod analytics;
pub mod changes;
pub mod csv;
pub mod dashboard;
pub mod endpoint;
pub mod journeys;
pub mod live_active;
pub mod local_response;
pub mod queries;
pub mod query_error;
pub mod ranges;
pub mod user_data;
