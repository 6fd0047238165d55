//! ferrymail: a chatmail relay whose rules run as WebAssembly policy components.
//!
//! The host (this crate) speaks the protocols, keeps the data and runs the policies; the
//! policies (`policies/`, built for wasm32-wasip2) decide. See DESIGN.md for the shape.

pub mod accept;
pub mod acme;
pub mod auth;
pub mod check;
pub mod clock;
pub mod config;
pub mod control;
pub mod dkim;
pub mod disk;
pub mod dns;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod imap;
pub mod inflight;
pub mod init;
mod login_throttle;
pub mod message;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod operator;
pub mod policy;
pub mod push;
pub mod records;
pub mod report;
pub mod resources;
pub mod retention;
pub mod scaffold;
pub mod serve;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod turn;
