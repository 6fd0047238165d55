//! A policy that misbehaves on purpose, chosen by its config's `mode`, so the engine's tests
//! can show that no policy takes the relay down:
//!
//! - `loop`: never returns (the deadline must end it);
//! - `memory`: allocates until the memory cap stops it;
//! - `trap`: panics;
//! - `wasi`: reads a file (policies have no filesystem);
//! - `huge-reply`: a reply text of a megabyte;
//! - `edit-flood`: a hundred thousand header edits;
//! - `bad-code`: a "reject" with code 250;
//! - `log-flood`: a thousand log lines, then accepts;
//! - `kv-flood`: writes `keys` new keys to its kv store, then accepts;
//! - `busy`: spins for `busy_ms` milliseconds, then answers like `reject`;
//! - `reject`: rejects with `550 5.7.1 <marker>` (tests tell bundles apart by the marker);
//! - `takeover`: `/new` hands out `address` with `password` (an address that may exist);
//! - anything else: accepts.

use ferrymail_policy::*;
use serde::Deserialize;

pub struct Hostile;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    mode: String,
    marker: String,
    busy_ms: u64,
    address: String,
    password: String,
    keys: u64,
}

fn misbehave() -> Verdict {
    let config: Config = config().unwrap_or_default();
    match config.mode.as_str() {
        "loop" => loop {
            std::hint::black_box(());
        },
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "trap" => panic!("hostile policy panics on purpose"),
        "wasi" => match std::fs::read("/etc/passwd") {
            Ok(_) => Verdict::reject(550, "5.7.1", "read a file it should not see"),
            Err(_) => Verdict::reject(550, "5.7.1", "file access failed without trapping"),
        },
        "huge-reply" => Verdict::reject(550, "5.7.1", "x".repeat(1 << 20)),
        "bad-code" => Verdict::reject(250, "", "accepted?"),
        "busy" => {
            let until = now_millis() + config.busy_ms;
            while now_millis() < until {
                std::hint::black_box(());
            }
            Verdict::reject(550, "5.7.1", config.marker)
        }
        "reject" => Verdict::reject(550, "5.7.1", config.marker),
        "log-flood" => {
            for i in 0..1000 {
                log(Level::Info, &format!("flood line {i}"));
            }
            Verdict::Accept
        }
        "kv-flood" => {
            let start = now_millis();
            for i in 0..config.keys {
                kv::set(&format!("flood-{start}-{i}"), &[0; 100], None);
            }
            Verdict::Accept
        }
        _ => Verdict::Accept,
    }
}

impl Policy for Hostile {
    const NAME: &'static str = "hostile";

    fn new_account(_request: NewAccountRequest) -> NewAccountVerdict {
        let config: Config = config().unwrap_or_default();
        match config.mode.as_str() {
            "takeover" => NewAccountVerdict::Credentials(Credentials { address: config.address, password: config.password }),
            _ => NewAccountVerdict::Accept,
        }
    }

    fn mail_from(_envelope: Envelope) -> Verdict {
        misbehave()
    }

    fn check_message(_envelope: Envelope, _message: &Message<'_>, _dkim: Vec<DkimResult>) -> MessageVerdict {
        let config: Config = config().unwrap_or_default();
        if config.mode == "edit-flood" {
            let mut verdict = MessageVerdict::accept();
            verdict.edits.set = (0..100_000).map(|i| (format!("X-Flood-{i}"), "y".repeat(64))).collect();
            return verdict;
        }
        misbehave().into()
    }
}

export_policy!(Hostile, hooks: [new_account, mail_from, check_message]);
