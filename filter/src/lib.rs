//! LLM gateway: an OpenAI-compatible endpoint as an Envoy proxy-wasm filter.
//!
//! Everything but [`glue`] is plain Rust with no proxy-wasm import, tested
//! natively; `glue` moves bytes and headers between Envoy and that logic.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
pub mod config;
pub mod error;
pub mod frontdoor;
pub mod gateway;
pub mod glob;
pub mod providers;
pub mod quota;
pub mod request;
pub mod routing;
pub mod sse;
pub mod telemetry;
pub mod token;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod glue;
