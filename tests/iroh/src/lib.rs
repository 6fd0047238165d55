//! Nothing here: see tests/relay.rs.
