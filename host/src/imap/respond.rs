//! Building IMAP responses with imap-types and encoding them with imap-codec into the
//! session's output buffer. Response texts live here.

use std::num::NonZeroU32;

use imap_codec::ResponseCodec;
use imap_codec::encode::Encoder;
use imap_codec::imap_types::core::{Atom, Tag, Text, Vec1};
use imap_codec::imap_types::extensions::compress::CompressionAlgorithm;
use imap_codec::imap_types::response::{Capability, Code, CodeOther, Data, Response, Status};
use imap_codec::imap_types::auth::AuthMechanism;

/// Responses waiting to be written.
#[derive(Default)]
pub struct Out {
    pub bytes: Vec<u8>,
}

fn text(t: &str) -> Text<'_> {
    Text::try_from(t).unwrap_or_else(|_| Text::try_from("...").expect("a constant, valid text"))
}

impl Out {
    pub fn response(&mut self, response: &Response<'_>) {
        self.bytes.extend(ResponseCodec::default().encode(response).dump());
    }

    /// Responses encoded elsewhere (on the blocking pool), taken without a copy when
    /// nothing else is waiting.
    pub fn append(&mut self, mut bytes: Vec<u8>) {
        if self.bytes.is_empty() {
            std::mem::swap(&mut self.bytes, &mut bytes);
        } else {
            self.bytes.append(&mut bytes);
        }
    }

    pub fn data(&mut self, data: Data<'_>) {
        self.response(&Response::Data(data));
    }

    fn status(&mut self, status: Status<'_>) {
        self.response(&Response::Status(status));
    }

    pub fn ok(&mut self, tag: &Tag<'_>, code: Option<Code<'_>>, message: &str) {
        self.status(Status::ok(Some(tag.clone()), code, text(message)).expect("valid status"));
    }

    pub fn no(&mut self, tag: &Tag<'_>, code: Option<Code<'_>>, message: &str) {
        self.status(Status::no(Some(tag.clone()), code, text(message)).expect("valid status"));
    }

    pub fn bad(&mut self, tag: Option<&Tag<'_>>, code: Option<Code<'_>>, message: &str) {
        self.status(Status::bad(tag.cloned(), code, text(message)).expect("valid status"));
    }

    pub fn untagged_ok(&mut self, code: Option<Code<'_>>, message: &str) {
        self.status(Status::ok(None, code, text(message)).expect("valid status"));
    }

    pub fn bye(&mut self, message: &str) {
        self.status(Status::bye(None, text(message)).expect("valid status"));
    }

    pub fn exists(&mut self, count: u32) {
        self.data(Data::Exists(count));
    }

    pub fn expunge(&mut self, seq: u32) {
        if let Some(seq) = NonZeroU32::new(seq) {
            self.data(Data::Expunge(seq));
        }
    }

    /// A command continuation request (`+ ...`).
    pub fn continuation(&mut self, message: &str) {
        self.bytes.extend_from_slice(b"+ ");
        self.bytes.extend_from_slice(message.as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
    }
}

/// A response code that imap-types has no variant for, such as `AUTHENTICATIONFAILED`.
pub fn code(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

fn atom(name: &'static str) -> Capability<'static> {
    Capability::from(Atom::try_from(name).expect("a constant, valid atom"))
}

/// What the session may do now decides what it advertises.
pub fn capabilities(tls: bool, authenticated: bool) -> Vec1<Capability<'static>> {
    let mut caps = vec![Capability::Imap4Rev1, Capability::SaslIr, Capability::Id, Capability::Enable, Capability::Idle, Capability::LiteralPlus];
    if !tls {
        caps.extend([Capability::StartTls, Capability::LoginDisabled]);
    } else if !authenticated {
        caps.push(Capability::Auth(AuthMechanism::Plain));
    }
    if authenticated {
        caps.extend([
            Capability::Namespace,
            Capability::UidPlus,
            Capability::Move,
            Capability::Unselect,
            Capability::CondStore,
            atom("SPECIAL-USE"),
            Capability::Quota,
            Capability::Metadata,
            Capability::Compress { algorithm: CompressionAlgorithm::Deflate },
        ]);
    }
    // The app looks for these before logging in.
    caps.extend([atom("XCHATMAIL"), atom("XDELTAPUSH")]);
    Vec1::try_from(caps).expect("not empty")
}

pub const GREETING: &str = "ferrymail ready";
pub const LOGIN_OK: &str = "Logged in";
pub const AUTH_FAILED: &str = "Authentication failed";
pub const AUTH_TEMPORARY: &str = "Temporary authentication failure, try again later";
pub const NEED_TLS: &str = "Plaintext authentication disallowed, use STARTTLS";
pub const NOT_AUTHENTICATED: &str = "Log in first";
pub const NOT_SELECTED: &str = "Select a mailbox first";
pub const NO_MAILBOX: &str = "Mailbox doesn't exist";
pub const DONE: &str = "Completed";
pub const SERVER_ERROR: &str = "Internal error, try again later";
pub const BAD_COMMAND: &str = "Error in IMAP command received by server";
pub const TOO_LONG: &str = "Command too long";
pub const LITERAL_TOO_LARGE: &str = "Literal too large";
pub const BUSY: &str = "Insufficient system resources, try again later";
pub const NO_STORAGE: &str = "Insufficient system storage";
pub const OVER_QUOTA: &str = "Quota exceeded";
pub const READ_ONLY: &str = "Mailbox is read-only";
pub const LOGOUT: &str = "Logging out";
pub const AUTOLOGOUT: &str = "Disconnected for inactivity";
pub const STILL_HERE: &str = "Still here";
pub const EXPUNGE_ISSUED: &str = "Some of the requested messages no longer exist";
pub const MAILBOX_DELETED: &str = "Selected mailbox was deleted, have to disconnect";
