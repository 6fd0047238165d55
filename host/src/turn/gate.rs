//! What may reach the TURN server's request handling. Anyone can send UDP to port 3478 with
//! any source address, so nothing a request without valid credentials causes may grow memory
//! or answer with much more than it was sent:
//!
//! - nonces are stateless: the time they were issued and a MAC of it and of the client's
//!   address (16 bits of it: a forged nonce would only save its sender the round trip for a
//!   real one); the `turn` crate, which would remember every nonce it hands out, only ever sees
//!   requests carrying a valid one (its table holds that one, for the call, and is emptied);
//! - the challenges (401 with a nonce, 438 for a stale one) and Binding answers are sent only
//!   when no larger than twice the request (UDP payload; a bare 20-byte Allocate, invalid
//!   anyway, gets nothing), and at most [`RATE`] a second in all;
//! - anything else without valid credentials is dropped unanswered.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use turn::proto::chandata::ChannelData;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{CODE_STALE_NONCE, CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute};
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;

/// Answers to requests without valid credentials, per second, all clients together.
const RATE: f64 = 100.0;
const BURST: f64 = 200.0;
/// How long a nonce stays valid (RFC 5766 suggests an hour).
const NONCE_LIFETIME_SECS: u64 = 3600;
/// The realm: short, so that the 401 for the smallest valid Allocate (28 bytes) stays within
/// twice its size. Clients take it from the 401; it names nothing.
pub const REALM: &str = "chatmail";

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the TURN server, with the nonce it carries (to be known to the server for
    /// this one request) and the username it authenticates as.
    Pass { nonce: Option<String>, username: Option<String> },
    /// Answer with these bytes ourselves.
    Reply(Vec<u8>),
    Drop,
}

pub struct Gate {
    key: ring::hmac::Key,
    bucket: Mutex<(f64, Instant)>,
}

impl Gate {
    pub fn new(secret: &[u8]) -> Gate {
        Gate { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[b"turn-nonce:".as_slice(), secret].concat()), bucket: Mutex::new((BURST, Instant::now())) }
    }

    /// Decide on a datagram from `from`, received at `now_secs` (Unix time).
    pub fn admit(&self, datagram: &[u8], from: SocketAddr, now_secs: u64) -> Admit {
        if ChannelData::is_channel_data(datagram) {
            // Data for an allocation (the server drops it when there is none): no answer.
            return Admit::Pass { nonce: None, username: None };
        }
        let mut message = Message::new();
        if message.unmarshal_binary(datagram).is_err() {
            return Admit::Drop;
        }
        let (method, class) = (message.typ.method, message.typ.class);
        if class == CLASS_INDICATION {
            return Admit::Pass { nonce: None, username: None };
        }
        if class != CLASS_REQUEST {
            return Admit::Drop;
        }
        if method == METHOD_BINDING {
            // XOR-MAPPED-ADDRESS and FINGERPRINT: 40 bytes for IPv4, 52 for IPv6.
            let answer = if from.is_ipv4() { 40 } else { 52 };
            return match answer <= 2 * datagram.len() && self.take() {
                true => Admit::Pass { nonce: None, username: None },
                false => Admit::Drop,
            };
        }
        if ![METHOD_ALLOCATE, METHOD_REFRESH, METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND].contains(&method) {
            return Admit::Drop;
        }
        let text = |attribute| message.get(attribute).ok().and_then(|v| String::from_utf8(v).ok());
        let nonce = text(ATTR_NONCE);
        let issued = nonce.as_deref().and_then(|n| self.issued_at(n, from));
        let signed = message.contains(ATTR_MESSAGE_INTEGRITY);
        let challenge = match (signed, issued) {
            (true, Some(at)) if now_secs.saturating_sub(at) < NONCE_LIFETIME_SECS => {
                return Admit::Pass { nonce, username: text(ATTR_USERNAME) };
            }
            // Ours, but old: the client is told to take a fresh one (long calls refresh).
            (true, Some(_)) => CODE_STALE_NONCE,
            // Only an Allocate may start without credentials.
            _ if method == METHOD_ALLOCATE => CODE_UNAUTHORIZED,
            _ => return Admit::Drop,
        };
        let Some(answer) = self.challenge(&message, challenge, from, now_secs) else { return Admit::Drop };
        match answer.len() <= 2 * datagram.len() && self.take() {
            true => Admit::Reply(answer),
            false => Admit::Drop,
        }
    }

    /// A nonce for `from` issued at `now_secs`: the time and 16 bits of a MAC, in hex (12
    /// characters: short, for the 401 to stay within twice the smallest Allocate).
    pub fn nonce(&self, from: SocketAddr, now_secs: u64) -> String {
        let time = (now_secs as u32).to_be_bytes();
        format!("{}{}", hex::encode(time), hex::encode(&self.mac(&time, from)[..2]))
    }

    /// When a nonce was issued, if it is one of ours for `from`.
    fn issued_at(&self, nonce: &str, from: SocketAddr) -> Option<u64> {
        let bytes = hex::decode(nonce).ok().filter(|b| b.len() == 6)?;
        let time: [u8; 4] = bytes[..4].try_into().ok()?;
        let mac = self.mac(&time, from);
        // A plain comparison: a forged nonce would only save its sender one round trip.
        (bytes[4..] == mac[..2]).then_some(())?;
        Some(u64::from(u32::from_be_bytes(time)))
    }

    fn mac(&self, time: &[u8; 4], from: SocketAddr) -> Vec<u8> {
        let address = match from.ip() {
            std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(ip) => ip.octets(),
        };
        let input = [time.as_slice(), &address, &from.port().to_be_bytes()].concat();
        ring::hmac::sign(&self.key, &input).as_ref().to_vec()
    }

    /// The error answer to `request`: `code`, a fresh nonce and the realm.
    fn challenge(&self, request: &Message, code: ErrorCode, from: SocketAddr, now_secs: u64) -> Option<Vec<u8>> {
        let mut answer = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(request.transaction_id),
            Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
            Box::new(ErrorCodeAttribute { code, reason: Vec::new() }),
            Box::new(TextAttribute::new(ATTR_NONCE, self.nonce(from, now_secs))),
            Box::new(TextAttribute::new(ATTR_REALM, REALM.to_string())),
        ];
        answer.build(&setters).ok()?;
        Some(answer.raw)
    }

    /// One answer from the budget for answers to strangers.
    fn take(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, since) = *bucket;
        let tokens = (tokens + now.duration_since(since).as_secs_f64() * RATE).min(BURST);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            return false;
        }
        *bucket = (tokens - 1.0, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: stun::message::Method, extra: Vec<Box<dyn Setter>>) -> Vec<u8> {
        let mut message = Message::new();
        let mut setters: Vec<Box<dyn Setter>> =
            vec![Box::new(stun::agent::TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))];
        setters.extend(extra);
        message.build(&setters).unwrap();
        message.raw
    }

    fn transport() -> Box<dyn Setter> {
        Box::new(turn::proto::reqtrans::RequestedTransport { protocol: turn::proto::PROTO_UDP })
    }

    #[test]
    fn strangers_get_small_stateless_challenges() {
        let gate = Gate::new(b"secret");
        let from: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        // The smallest valid Allocate (REQUESTED-TRANSPORT only): a 401 of at most twice its size.
        let allocate = request(METHOD_ALLOCATE, vec![transport()]);
        assert_eq!(allocate.len(), 28);
        let Admit::Reply(answer) = gate.admit(&allocate, from, 1000) else { panic!("a 401") };
        assert!(answer.len() <= 2 * allocate.len(), "{} bytes", answer.len());
        let mut parsed = Message::new();
        parsed.unmarshal_binary(&answer).unwrap();
        let nonce = String::from_utf8(parsed.get(ATTR_NONCE).unwrap()).unwrap();
        assert_eq!(gate.issued_at(&nonce, from), Some(1000));
        assert_eq!(gate.issued_at(&nonce, "192.0.2.2:5000".parse().unwrap()), None, "bound to the address");
        assert_eq!(gate.issued_at("00000000dead", from), None);
        // A bare header is no Allocate: nothing; nor are other methods without credentials.
        assert_eq!(gate.admit(&request(METHOD_ALLOCATE, vec![]), from, 1000), Admit::Drop);
        assert_eq!(gate.admit(&request(METHOD_REFRESH, vec![transport()]), from, 1000), Admit::Drop);
        assert_eq!(gate.admit(b"not stun at all, just bytes", from, 1000), Admit::Drop);
    }

    #[test]
    fn answers_to_strangers_are_rate_limited() {
        let gate = Gate::new(b"secret");
        let from: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let allocate = request(METHOD_ALLOCATE, vec![transport()]);
        let answered = (0..1000).filter(|_| matches!(gate.admit(&allocate, from, 1000), Admit::Reply(_))).count();
        assert!((BURST as usize..BURST as usize + 20).contains(&answered), "{answered}");
    }
}
