//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): each takes arbitrary bytes and
//! drives one parser the way the relay does, so that the targets stay one line each and
//! `cargo test` replays the committed corpora through the same code. Nothing here may panic,
//! loop forever or allocate without bound, whatever the input.

use crate::config::Config;
use crate::message::ParsedMessage;

/// The config file, TOML or a chatmail.ini: an error names the key.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(loaded) = Config::parse(text) {
        let config = loaded.config;
        let _ = config.policy_params();
        let _ = config.iroh_relay_url();
        let _ = config.is_local("someone@example.org");
    }
    let _ = Config::parse_ini(text);
}

/// The message view policies see (MIME parts, headers, addresses, decoded bodies, OpenPGP
/// armor and packets), IMAP's part paths, ENVELOPE and BODYSTRUCTURE.
pub fn message(data: &[u8]) {
    let _ = crate::imap::structure::envelope(data);
    let _ = crate::imap::structure::body_structure(data);
    let Ok(message) = ParsedMessage::parse(data.to_vec()) else { return };
    for name in ["From", "To", "Subject", "Content-Type", "Autocrypt"] {
        let _ = message.header(name);
        let _ = message.addresses(name);
    }
    for part in 0..message.parts().len() as u32 {
        let _ = message.part_header(part, "Content-Type");
        let _ = message.body(part);
        let _ = message.armor(part);
    }
    for path in [&[][..], &[1], &[2], &[1, 1], &[2, 1], &[3, 2, 1]] {
        let _ = message.raw_part_body(path);
        let _ = message.raw_part_header(path);
    }
}
