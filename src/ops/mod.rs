//! The ops CLI: [`commands`] (`sessions`, `stats`, `top`, `cleanup`, `validate`, `anomalies`,
//! `revoke`, `behavior`, `online`), the `check` diagnostics ([`check`]), integrity validation
//! and repair ([`integrity`]), and human output ([`terminal`]).
//!
//! May use: `api`, `capture`, `store`, `config`, `observe`.

pub mod check;
pub mod commands;
pub mod integrity;
pub mod key_rotation;
pub mod terminal;
