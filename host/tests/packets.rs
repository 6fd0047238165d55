//! Our OpenPGP packet-header reader (ferrymail-message's armor.rs) against sequoia-openpgp's,
//! on real messages, the fuzz corpus and many small mutations of both: the same packets, and
//! an error exactly where sequoia finds one. The relay once used sequoia for this; the policy
//! SDK's test helpers cannot carry it, so the few lines moved in-house and are held to it here.

mod common;

use buffered_reader::BufferedReader;
use ferrymail::message::armor::{PacketInfo, walk_packets};
use sequoia_openpgp::packet::Header;
use sequoia_openpgp::packet::header::{BodyLength, CTB};
use sequoia_openpgp::parse::{Cookie, Parse};

/// The top-level packets as sequoia reads their headers, and whether the stream broke off.
fn sequoia_walk(data: &[u8]) -> (Vec<PacketInfo>, bool) {
    let mut reader = buffered_reader::Memory::with_cookie(data, Cookie::default());
    let mut packets = Vec::new();
    while !reader.data(1).map(|d| d.is_empty()).unwrap_or(true) {
        let Ok(header) = Header::from_buffered_reader(&mut reader) else { return (packets, true) };
        let (tag, legacy_format) = match header.ctb() {
            CTB::New(ctb) => (u8::from(ctb.tag()), false),
            CTB::Old(ctb) => (u8::from(ctb.tag()), true),
        };
        let (length, partial) = match *header.length() {
            BodyLength::Full(len) if skip(&mut reader, len) => (u64::from(len), false),
            // Chunk lengths after the first were always read by our own code (sequoia keeps
            // that parser private): this is the relay's earlier version of it.
            BodyLength::Partial(first) => {
                let mut total = 0u64;
                let mut chunk = first;
                loop {
                    if !skip(&mut reader, chunk) {
                        return (packets, true);
                    }
                    total += u64::from(chunk);
                    let Ok(octet) = reader.data_consume_hard(1).map(|d| d[0]) else { return (packets, true) };
                    let last = match octet {
                        0..=191 => u32::from(octet),
                        192..=223 => match reader.data_consume_hard(1) {
                            Ok(d) => ((u32::from(octet) - 192) << 8) + u32::from(d[0]) + 192,
                            Err(_) => return (packets, true),
                        },
                        224..=254 => {
                            chunk = 1 << (octet & 0x1F);
                            continue;
                        }
                        255 => match reader.read_be_u32() {
                            Ok(len) => len,
                            Err(_) => return (packets, true),
                        },
                    };
                    if !skip(&mut reader, last) {
                        return (packets, true);
                    }
                    break (total + u64::from(last), true);
                }
            }
            _ => return (packets, true),
        };
        packets.push(PacketInfo { tag, legacy_format, length, partial });
    }
    (packets, false)
}

fn skip(reader: &mut buffered_reader::Memory<'_, Cookie>, len: u32) -> bool {
    reader.data_consume_hard(len as usize).is_ok()
}

fn assert_same(data: &[u8]) {
    let (ours, error) = walk_packets(data);
    let (theirs, broke_off) = sequoia_walk(data);
    assert_eq!((&ours, error.is_some()), (&theirs, broke_off), "packet stream {:02x?}", &data[..data.len().min(48)]);
}

/// xorshift64*: repeatable mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

#[test]
fn packet_headers_read_as_sequoia_reads_them() {
    let certs = common::pgp::certs();
    let mut seeds = vec![
        common::pgp::encrypt_to(&[&certs[0], &certs[1]], b"hello"),
        common::pgp::encrypt_to(&[&certs[2]], &vec![b'x'; 70_000]),
        common::pgp::encrypt_with_password("secret", b"hi"),
        vec![0xD2, 0xE1, 7, 7, 0xE0, 7, 3, 1, 2, 3], // partial lengths
        vec![0x8C, 2, 9, 9, 0x89, 0, 1, 0, 0x8A, 0, 0, 0, 0, 0x8F, 1, 2], // legacy lengths
        vec![0xC1, 0xC5, 0x10],
        vec![0xD2, 0xFF, 0, 0, 0, 1, 0],
    ];
    // The fuzz corpus: raw messages are packet streams too (mostly broken ones), and so are
    // any base64 armor blocks inside them.
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/message");
    for entry in std::fs::read_dir(corpus).unwrap() {
        let raw = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(text) = std::str::from_utf8(&raw)
            && let Some((_, armored)) = text.split_once("-----BEGIN PGP MESSAGE-----")
        {
            let b64: String = armored
                .lines()
                .take_while(|l| !l.starts_with("-----END"))
                .filter(|l| !l.contains(':') && !l.starts_with('='))
                .collect::<String>()
                .split_whitespace()
                .collect();
            use base64::Engine;
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
                seeds.push(bytes);
            }
        }
        seeds.push(raw);
    }
    let mut rng = Rng(0x5EED_F00D_CAFE_BABE);
    let mut checked = 0;
    for seed in &seeds {
        assert_same(seed);
        for _ in 0..40 {
            let mut data = seed.clone();
            match rng.below(3) {
                0 => data.truncate(rng.below(data.len() + 1)),
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(data.len().min(64));
                        if let Some(byte) = data.get_mut(at) {
                            *byte = rng.below(256) as u8;
                        }
                    }
                }
                _ => data = (0..rng.below(24)).map(|_| rng.below(256) as u8).collect(),
            }
            assert_same(&data);
            checked += 1;
        }
    }
    assert!(checked > 10_000, "only {checked} streams checked");
}
