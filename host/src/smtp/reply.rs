//! Every SMTP reply the relay sends, in one place. Texts follow Postfix (what chatmail
//! relays run) where the app or other servers may look at them.

pub fn greeting(domain: &str) -> String {
    format!("220 {domain} ESMTP")
}

pub const OK: &str = "250 2.0.0 Ok";
pub const MAIL_OK: &str = "250 2.1.0 Ok";
pub const RCPT_OK: &str = "250 2.1.5 Ok";
pub const QUEUED: &str = "250 2.0.0 Ok: queued";
pub const START_DATA: &str = "354 End data with <CR><LF>.<CR><LF>";
pub const BYE: &str = "221 2.0.0 Bye";
pub const START_TLS: &str = "220 2.0.0 Ready to start TLS";
pub const AUTH_OK: &str = "235 2.7.0 Authentication successful";
pub const AUTH_PLAIN_CHALLENGE: &str = "334 ";
pub const AUTH_LOGIN_USERNAME: &str = "334 VXNlcm5hbWU6";
pub const AUTH_LOGIN_PASSWORD: &str = "334 UGFzc3dvcmQ6";
pub const VRFY: &str = "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery";

pub const AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed";
pub const AUTH_TEMPORARY: &str = "454 4.7.0 Temporary authentication failure";
pub const AUTH_CANCELLED: &str = "501 5.7.0 Authentication aborted";
pub const AUTH_BAD_BASE64: &str = "501 5.5.2 Error: invalid base64 data";
pub const AUTH_UNSUPPORTED: &str = "504 5.5.4 Unsupported authentication mechanism";
pub const AUTH_ALREADY: &str = "503 5.5.1 Error: already authenticated";
pub const AUTH_NOT_HERE: &str = "503 5.5.1 Error: authentication not enabled";
pub const AUTH_REQUIRED: &str = "530 5.7.0 Authentication required";
pub const TLS_REQUIRED: &str = "530 5.7.0 Must issue a STARTTLS command first";
pub const TLS_ALREADY: &str = "503 5.5.1 Error: TLS already active";

pub const NEED_HELO: &str = "503 5.5.1 Error: send HELO/EHLO first";
pub const NESTED_MAIL: &str = "503 5.5.1 Error: nested MAIL command";
pub const NEED_MAIL: &str = "503 5.5.1 Error: need MAIL command";
pub const NEED_RCPT: &str = "554 5.5.1 Error: no valid recipients";
pub const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Error: too many recipients";
/// The relay holds as many messages in memory as it may (inflight.rs).
pub const BUSY: &str = "452 4.3.1 Insufficient system resources, try again later";
/// The disk is nearly full (disk.rs): as Postfix says it.
pub const NO_STORAGE: &str = "452 4.3.1 Insufficient system storage";
pub const SIZE_EXCEEDED: &str = "552 5.3.4 Message exceeds maximum size";
pub const NOT_IMPLEMENTED: &str = "502 5.5.1 Error: command not implemented";
pub const UNKNOWN_COMMAND: &str = "500 5.5.2 Error: command not recognized";
pub const LINE_TOO_LONG: &str = "500 5.5.2 Error: line too long";
pub const BAD_SENDER: &str = "501 5.1.7 Bad sender address syntax";
pub const BAD_RECIPIENT: &str = "501 5.1.3 Bad recipient address syntax";
pub const TOO_MANY_ERRORS: &str = "421 4.7.0 Error: too many errors";
pub const TOO_MANY_COMMANDS: &str = "421 4.7.0 Error: too many commands";
pub const TIMEOUT: &str = "421 4.4.2 Error: timeout exceeded";

pub fn syntax(detail: &str) -> String {
    format!("501 5.5.4 Syntax error: {detail}")
}

pub fn sender_not_owned(sender: &str, login: &str) -> String {
    format!("553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}")
}

/// The EHLO reply: exactly `AUTH PLAIN LOGIN` (the Delta Chat app does not parse
/// `AUTH=PLAIN`), STARTTLS only where it can still be used, AUTH only over TLS.
pub fn ehlo(domain: &str, max_size: u64, starttls: bool, auth: bool) -> String {
    let mut lines = vec![domain.to_string(), "PIPELINING".into(), format!("SIZE {max_size}")];
    if starttls {
        lines.push("STARTTLS".into());
    }
    if auth {
        lines.push("AUTH PLAIN LOGIN".into());
    }
    lines.extend(["ENHANCEDSTATUSCODES".into(), "8BITMIME".into(), "SMTPUTF8".into()]);
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| format!("250{}{line}", if i == last { ' ' } else { '-' }))
        .collect::<Vec<_>>()
        .join("\r\n")
}
