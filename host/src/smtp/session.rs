//! One SMTP connection, read top to bottom: greeting, EHLO, STARTTLS, AUTH, then
//! transactions (MAIL, RCPT, DATA) until QUIT. Commands are parsed with smtp-proto; every
//! decision about a sender, a recipient or a message is the policy bundle's.
//!
//! Pipelining: all commands in one read are answered together, in order.

use std::net::IpAddr;
use std::slice::Iter;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use smtp_proto::request::receiver::{DummyLineReceiver, LineReceiver, RequestReceiver};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::data::DataReader;
use super::{Kind, reply};
use crate::accept::{Refused, Submission, accept, recipient};
use crate::auth::LoginError;
use crate::inflight::Held;
use crate::net::Stream;
use crate::policy::{Direction, DkimResult, Envelope, Verdict};
use crate::serve::Relay;
use crate::tls::Port;

const MAX_ERRORS: u32 = 20;
const MAX_COMMANDS: u32 = 100_000;
/// Command lines longer than this are refused (RFC 5321 allows 512; extensions add some).
const MAX_LINE: usize = 4096;

pub struct Session {
    relay: Arc<Relay>,
    kind: Kind,
    stream: Stream,
    /// The client's address: compared with IP-literal sender domains, never logged or stored.
    peer: Option<IpAddr>,
    out: Vec<u8>,
    state: State,
    helo: bool,
    /// The authenticated login (submission only).
    login: Option<String>,
    transaction: Option<Transaction>,
    errors: u32,
    commands: u32,
    quit: bool,
    start_tls: bool,
    /// The start of a command line whose end has not arrived: the parser gets whole lines.
    partial_line: Vec<u8>,
    /// A submission session must have logged in by then (see [`Session::read_timeout`]).
    login_deadline: tokio::time::Instant,
}

enum State {
    Command(RequestReceiver),
    Data(DataReader),
    /// Reading the rest of a message that cannot be taken (too large, or no memory for it),
    /// to answer with this reply at its end.
    SkipData(DataReader, &'static str),
    /// Reading the rest of an overlong command line.
    SkipLine(DummyLineReceiver),
    Auth(LineReceiver<AuthStep>),
}

#[derive(Clone)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword(String),
}

struct Transaction {
    mail_from: String,
    /// The mail-from hooks' verdict: reported at RCPT, where clients look for it.
    mail_verdict: Verdict,
    local: Vec<String>,
    remote: Vec<String>,
    /// The size MAIL FROM announced (0: none).
    declared_size: u64,
    data: Vec<u8>,
    /// What `data` may use of the relay's budget for messages in memory: its capacity.
    held: Option<Held>,
}

impl Session {
    pub fn new(relay: Arc<Relay>, kind: Kind, stream: Stream) -> Session {
        let peer = match &stream {
            Stream::Plain(tcp) => tcp.peer_addr().ok().map(|a| a.ip()),
            _ => None,
        };
        let login_deadline = tokio::time::Instant::now() + relay.config.timeouts.login();
        Session {
            relay,
            kind,
            stream,
            peer,
            out: Vec::with_capacity(512),
            state: State::Command(RequestReceiver::default()),
            helo: false,
            login: None,
            transaction: None,
            errors: 0,
            partial_line: Vec::new(),
            commands: 0,
            quit: false,
            start_tls: false,
            login_deadline,
        }
    }

    /// How long to wait for the client now: the SMTP timeout between commands, and before a
    /// submission session's login no longer than what is left of the time to log in.
    fn read_timeout(&self) -> Duration {
        let between_commands = self.relay.config.timeouts.smtp();
        match self.kind {
            Kind::Submission | Kind::Submissions if self.login.is_none() => {
                between_commands.min(self.login_deadline.saturating_duration_since(tokio::time::Instant::now()))
            }
            _ => between_commands,
        }
    }

    pub async fn run(mut self) {
        if self.kind == Kind::Submissions && !self.stream.is_tls() && self.stream.upgrade(self.relay.tls.acceptor(Port::Submission)).await.is_err() {
            return;
        }
        self.reply(&reply::greeting(&self.relay.config.mail_domain));
        let mut buf = vec![0u8; 8192];
        loop {
            if self.flush().await.is_err() || self.quit {
                break;
            }
            if self.start_tls {
                // Whatever the client sent after STARTTLS in plaintext is dropped with `buf`'s
                // old contents: nothing typed before the handshake may count after it.
                self.start_tls = false;
                let port = if self.kind == Kind::Mx { Port::Mx } else { Port::Submission };
                if self.stream.upgrade(self.relay.tls.acceptor(port)).await.is_err() {
                    break;
                }
                self.helo = false;
                self.transaction = None;
                self.partial_line.clear();
                self.state = State::Command(RequestReceiver::default());
                continue;
            }
            let read = match tokio::time::timeout(self.read_timeout(), self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => n,
                Err(_) => {
                    self.reply(reply::TIMEOUT);
                    let _ = self.flush().await;
                    break;
                }
            };
            let mut bytes = buf[..read].iter();
            while !bytes.as_slice().is_empty() && !self.quit && !self.start_tls {
                self.step(&mut bytes).await;
            }
        }
        self.stream.close().await;
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn error(&mut self, line: &str) {
        self.reply(line);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.reply(reply::TOO_MANY_ERRORS);
            self.quit = true;
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Consume input according to the state: a command, message data, or an AUTH line.
    async fn step(&mut self, bytes: &mut Iter<'_, u8>) {
        match &mut self.state {
            State::Command(_) => {
                // The parser gets one whole line at a time, so that address literals can be
                // swapped for what it takes (see literal.rs) and lines are bounded here.
                let input = bytes.as_slice();
                let Some(end) = memchr::memchr(b'\n', input) else {
                    *bytes = input[input.len()..].iter();
                    if self.partial_line.len() + input.len() > MAX_LINE {
                        self.partial_line = Vec::new();
                        self.error(reply::LINE_TOO_LONG);
                        self.state = State::SkipLine(DummyLineReceiver::default());
                    } else {
                        self.partial_line.extend_from_slice(input);
                    }
                    return;
                };
                *bytes = input[end + 1..].iter();
                // Copied only when it arrived in pieces.
                let line: std::borrow::Cow<'_, [u8]> = if self.partial_line.is_empty() {
                    std::borrow::Cow::Borrowed(&input[..=end])
                } else {
                    let mut line = std::mem::take(&mut self.partial_line);
                    line.extend_from_slice(&input[..=end]);
                    std::borrow::Cow::Owned(line)
                };
                if line.len() > MAX_LINE {
                    return self.error(reply::LINE_TOO_LONG);
                }
                let Ok(line) = super::literal::encode(&line) else {
                    let refusal = if line[..4].eq_ignore_ascii_case(b"MAIL") { reply::BAD_SENDER } else { reply::BAD_RECIPIENT };
                    return self.error(refusal);
                };
                let State::Command(receiver) = &mut self.state else { return };
                match receiver.ingest(&mut line.iter()) {
                    Ok(request) => {
                        let request = request.into_owned();
                        self.commands += 1;
                        if self.commands > MAX_COMMANDS {
                            self.reply(reply::TOO_MANY_COMMANDS);
                            self.quit = true;
                            return;
                        }
                        self.command(request).await;
                    }
                    Err(ParseError::NeedsMoreData { .. }) => {}
                    Err(ParseError::ResponseTooLong) => self.error(reply::LINE_TOO_LONG),
                    Err(ParseError::UnknownCommand) => self.error(reply::UNKNOWN_COMMAND),
                    Err(ParseError::InvalidSenderAddress) => self.error(reply::BAD_SENDER),
                    Err(ParseError::InvalidRecipientAddress) => self.error(reply::BAD_RECIPIENT),
                    Err(ParseError::SyntaxError { syntax }) => self.error(&reply::syntax(syntax)),
                    Err(ParseError::InvalidParameter { param }) => self.error(&format!("501 5.5.4 Invalid parameter {param}")),
                    Err(ParseError::UnsupportedParameter { param }) => {
                        self.error(&format!("555 5.5.4 Unsupported parameter {param}"))
                    }
                    Err(ParseError::InvalidResponse { .. }) => self.error(reply::UNKNOWN_COMMAND),
                }
            }
            State::SkipLine(receiver) => {
                if receiver.ingest(bytes) {
                    self.state = State::Command(RequestReceiver::default());
                }
            }
            State::Data(reader) => {
                let Some(transaction) = self.transaction.as_mut() else {
                    self.state = State::Command(RequestReceiver::default());
                    return;
                };
                let input = bytes.as_slice();
                // Room first, held from the budget: normalising bare line ends may double what
                // arrived (plus a line end and a dot carried over from the last read). The
                // buffer grows by exact steps as the message arrives, never doubling behind the
                // budget's back, and not beyond an announced size it keeps to.
                let (len, capacity) = (transaction.data.len(), transaction.data.capacity());
                let max = self.relay.config.max_message_size.0 as usize;
                let needed = len + 2 * input.len() + 4;
                if capacity < needed && len <= max {
                    let declared = transaction.declared_size as usize;
                    let step = needed.max(len + len / 8).max(crate::inflight::FIRST_STEP as usize);
                    let wanted = if declared > 0 { step.min(declared.max(needed)) } else { step }.min(max + 2 * input.len() + 4);
                    let held = transaction.held.get_or_insert_with(|| Held::none());
                    if !held.try_grow(&self.relay.in_flight, wanted as u64) {
                        self.relay.metrics.inc("ferrymail_in_flight_refused_total", &[("via", "smtp")]);
                        transaction.data = Vec::new();
                        transaction.held = None;
                        let reader = std::mem::take(reader);
                        self.state = State::SkipData(reader, reply::BUSY);
                        return;
                    }
                    transaction.data.reserve_exact(wanted - len);
                }
                let (taken, done) = reader.ingest(input, Some(&mut transaction.data));
                *bytes = input[taken..].iter();
                if done {
                    self.state = State::Command(RequestReceiver::default());
                    self.end_of_data().await;
                } else if transaction.data.len() > max {
                    transaction.data = Vec::new();
                    transaction.held = None;
                    let reader = std::mem::take(reader);
                    self.state = State::SkipData(reader, reply::SIZE_EXCEEDED);
                }
            }
            State::SkipData(reader, answer) => {
                let answer = *answer;
                let (taken, done) = reader.ingest(bytes.as_slice(), None);
                *bytes = bytes.as_slice()[taken..].iter();
                if done {
                    self.transaction = None;
                    self.state = State::Command(RequestReceiver::default());
                    self.reply(answer);
                }
            }
            State::Auth(receiver) => {
                if receiver.ingest(bytes) {
                    let line = std::mem::take(&mut receiver.buf);
                    let step = receiver.state.clone();
                    self.state = State::Command(RequestReceiver::default());
                    self.auth_line(step, &line).await;
                }
            }
        }
    }

    async fn command(&mut self, request: Request<String>) {
        match request {
            Request::Ehlo { host: _ } => {
                self.helo = true;
                self.transaction = None;
                let starttls = !self.stream.is_tls();
                let auth = self.kind != Kind::Mx && self.stream.is_tls();
                let domain = self.relay.config.mail_domain.clone();
                self.reply(&reply::ehlo(&domain, self.relay.config.max_message_size.0, starttls, auth));
            }
            Request::Helo { host: _ } => {
                self.helo = true;
                self.transaction = None;
                let line = format!("250 {}", self.relay.config.mail_domain);
                self.reply(&line);
            }
            Request::StartTls => {
                if self.stream.is_tls() {
                    self.error(reply::TLS_ALREADY);
                } else {
                    self.reply(reply::START_TLS);
                    self.start_tls = true;
                }
            }
            Request::Auth { mechanism, initial_response } => self.auth(mechanism, &initial_response).await,
            Request::Mail { from } => match super::literal::decode(from.address) {
                Some(address) => self.mail(address, from.size as u64).await,
                None => self.error(reply::BAD_SENDER),
            },
            Request::Rcpt { to } => match super::literal::decode(to.address) {
                Some(address) => self.rcpt(address).await,
                None => self.error(reply::BAD_RECIPIENT),
            },
            Request::Data => self.data(),
            Request::Rset => {
                self.transaction = None;
                self.reply(reply::OK);
            }
            Request::Noop { .. } => self.reply(reply::OK),
            Request::Vrfy { .. } => self.reply(reply::VRFY),
            Request::Quit => {
                self.reply(reply::BYE);
                self.quit = true;
            }
            Request::Lhlo { .. }
            | Request::Bdat { .. }
            | Request::Expn { .. }
            | Request::Help { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(reply::NOT_IMPLEMENTED),
        }
    }

    /// Submission ports need TLS and a login before MAIL; the MX port needs TLS.
    fn may_send(&mut self) -> bool {
        if !self.helo {
            self.error(reply::NEED_HELO);
        } else if !self.stream.is_tls() {
            self.error(reply::TLS_REQUIRED);
        } else if self.kind != Kind::Mx && self.login.is_none() {
            self.error(reply::AUTH_REQUIRED);
        } else {
            return true;
        }
        false
    }

    async fn auth(&mut self, mechanism: u64, initial: &str) {
        if self.kind == Kind::Mx {
            return self.error(reply::AUTH_NOT_HERE);
        }
        if !self.stream.is_tls() {
            return self.error(reply::TLS_REQUIRED);
        }
        if self.login.is_some() {
            return self.error(reply::AUTH_ALREADY);
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.reply(reply::AUTH_PLAIN_CHALLENGE);
                self.state = State::Auth(LineReceiver::new(AuthStep::Plain));
            }
            AUTH_PLAIN => self.auth_line(AuthStep::Plain, initial.as_bytes()).await,
            AUTH_LOGIN if initial.is_empty() => {
                self.reply(reply::AUTH_LOGIN_USERNAME);
                self.state = State::Auth(LineReceiver::new(AuthStep::LoginUser));
            }
            AUTH_LOGIN => self.auth_line(AuthStep::LoginUser, initial.as_bytes()).await,
            _ => self.error(reply::AUTH_UNSUPPORTED),
        }
    }

    /// One base64 line of an AUTH exchange.
    async fn auth_line(&mut self, step: AuthStep, line: &[u8]) {
        if line == b"*" {
            return self.error(reply::AUTH_CANCELLED);
        }
        let decoded = if line == b"=" {
            Vec::new()
        } else {
            match base64::engine::general_purpose::STANDARD.decode(line) {
                Ok(decoded) => decoded,
                Err(_) => return self.error(reply::AUTH_BAD_BASE64),
            }
        };
        let text = String::from_utf8_lossy(&decoded).into_owned();
        match step {
            AuthStep::Plain => {
                // authzid \0 authcid \0 password
                let mut fields = text.splitn(3, '\0');
                let (_authzid, user, password) = (fields.next(), fields.next(), fields.next());
                match (user, password) {
                    (Some(user), Some(password)) => self.login(user.to_string(), password.to_string()).await,
                    _ => self.error(reply::AUTH_FAILED),
                }
            }
            AuthStep::LoginUser => {
                self.reply(reply::AUTH_LOGIN_PASSWORD);
                self.state = State::Auth(LineReceiver::new(AuthStep::LoginPassword(text)));
            }
            AuthStep::LoginPassword(user) => self.login(user, text).await,
        }
    }

    async fn login(&mut self, user: String, password: String) {
        match self.relay.auth.login(&user, &password).await {
            Ok(account) => {
                self.login = Some(account.address);
                self.reply(reply::AUTH_OK);
            }
            Err(LoginError::Temporary(reason)) => {
                tracing::debug!("SMTP login deferred: {reason}");
                self.reply(reply::AUTH_TEMPORARY);
            }
            Err(LoginError::Invalid | LoginError::Refused(_)) => self.error(reply::AUTH_FAILED),
        }
    }

    async fn mail(&mut self, address: String, size: u64) {
        if !self.may_send() {
            return;
        }
        if self.transaction.is_some() {
            return self.error(reply::NESTED_MAIL);
        }
        if size > self.relay.config.max_message_size.0 {
            return self.reply(reply::SIZE_EXCEEDED);
        }
        // Before any policy runs: on a full disk their own state could not be written either.
        if !self.relay.disk.has_room(size) {
            return self.reply(reply::NO_STORAGE);
        }
        let envelope = self.envelope(&address, Vec::new());
        let mail_verdict = self.relay.policies.mail_from(envelope).await;
        self.transaction = Some(Transaction {
            mail_from: address,
            mail_verdict,
            local: Vec::new(),
            remote: Vec::new(),
            declared_size: size,
            data: Vec::new(),
            held: None,
        });
        self.reply(reply::MAIL_OK);
    }

    fn envelope(&self, mail_from: &str, rcpt_to: Vec<String>) -> Envelope {
        Envelope {
            direction: if self.kind == Kind::Mx { Direction::Incoming } else { Direction::Outgoing },
            mail_from: mail_from.to_string(),
            rcpt_to,
            authenticated_as: self.login.clone(),
        }
    }

    async fn rcpt(&mut self, address: String) {
        let Some(transaction) = &self.transaction else {
            return self.error(reply::NEED_MAIL);
        };
        if transaction.local.len() + transaction.remote.len() >= super::MAX_RECIPIENTS {
            return self.reply(reply::TOO_MANY_RECIPIENTS);
        }
        if let Some(login) = &self.login
            && !transaction.mail_from.eq_ignore_ascii_case(login)
        {
            let line = reply::sender_not_owned(&transaction.mail_from, login);
            return self.error(&line);
        }
        if let Verdict::Reject(reply) | Verdict::Defer(reply) = &transaction.mail_verdict {
            let line = reply.to_string();
            return self.reply(&line);
        }
        let address = address.to_ascii_lowercase();
        let accepted: Vec<String> = transaction.local.iter().chain(&transaction.remote).cloned().collect();
        if accepted.contains(&address) {
            return self.reply(reply::RCPT_OK);
        }
        let mail_from = transaction.mail_from.clone();
        let envelope = self.envelope(&mail_from, accepted);
        let local = match recipient(&self.relay, &envelope, &address).await {
            Ok(local) => local,
            Err(Refused(refusal)) => {
                let line = refusal.to_string();
                self.reply(&line);
                // 421 means the server closes the connection.
                self.quit = refusal.code == 421;
                return;
            }
        };
        if let Some(transaction) = self.transaction.as_mut() {
            if local {
                transaction.local.push(address);
            } else {
                transaction.remote.push(address);
            }
        }
        self.reply(reply::RCPT_OK);
    }

    fn data(&mut self) {
        match &mut self.transaction {
            None => self.error(reply::NEED_MAIL),
            Some(t) if t.local.is_empty() && t.remote.is_empty() => self.error(reply::NEED_RCPT),
            Some(t) => {
                // The announced size must fit in the budget for messages in memory now, or the
                // client is told to come back later before it sends anything; what is held
                // grows as the message arrives.
                let announced = t.declared_size.max(64 * 1024).min(self.relay.config.max_message_size.0);
                match self.relay.in_flight.try_start(announced) {
                    Some(held) => {
                        t.data = Vec::with_capacity(announced.min(crate::inflight::FIRST_STEP) as usize);
                        t.held = Some(held);
                        self.state = State::Data(DataReader::default());
                        self.reply(reply::START_DATA);
                    }
                    None => {
                        self.relay.metrics.inc("ferrymail_in_flight_refused_total", &[("via", "smtp")]);
                        self.reply(reply::BUSY);
                    }
                }
            }
        }
    }

    async fn end_of_data(&mut self) {
        let Some(mut transaction) = self.transaction.take() else { return };
        // The buffer grew in steps ahead of the data: give the rest back (shrinking in place).
        transaction.data.shrink_to_fit();
        let dkim = match self.kind {
            Kind::Mx => {
                let (raw, dkim) = incoming_authentication(&self.relay, std::mem::take(&mut transaction.data), self.peer).await;
                transaction.data = raw;
                dkim
            }
            Kind::Submission | Kind::Submissions => Vec::new(),
        };
        let submission = Submission {
            direction: if self.kind == Kind::Mx { Direction::Incoming } else { Direction::Outgoing },
            mail_from: transaction.mail_from,
            local: transaction.local,
            remote: transaction.remote,
            authenticated_as: self.login.clone(),
            dkim,
            raw: transaction.data,
        };
        match accept(&self.relay, submission).await {
            Ok(()) => self.reply(reply::QUEUED),
            Err(Refused(reply)) => {
                let line = reply.to_string();
                self.reply(&line);
            }
        }
    }
}

/// The DKIM signatures of a message from another server, and — for a sender whose domain is
/// an IP literal, which cannot publish a key — whether the message came from that address.
/// Hashing a 30 MB message takes a while: this runs on the blocking pool (DNS lookups and
/// all), and hands the message back.
pub async fn incoming_authentication(relay: &Arc<Relay>, raw: Vec<u8>, peer: Option<IpAddr>) -> (Vec<u8>, Vec<DkimResult>) {
    let (relay, runtime) = (relay.clone(), tokio::runtime::Handle::current());
    let work = move || {
        let results = runtime.block_on(authenticate(&relay, &raw, peer));
        (raw, results)
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn authenticate(relay: &Relay, raw: &[u8], peer: Option<IpAddr>) -> Vec<DkimResult> {
    let mut results = relay.dkim.verify(raw).await;
    // The whole message is parsed later anyway: parse it here only for an IP-literal sender.
    let from = crate::message::header::select_fields(raw, &[b"From"], false);
    if peer.is_none() || !from.windows(2).any(|w| w == b"@[") {
        return results;
    }
    let literal = crate::message::ParsedMessage::parse(raw.to_vec())
        .ok()
        .and_then(|m| m.addresses("from").first().and_then(|from| from.rsplit_once('@').map(|(_, d)| d.to_string())))
        .filter(|domain| crate::dns::ip_literal(domain).is_some());
    if let (Some(domain), Some(peer)) = (literal, peer)
        && crate::dns::ip_literal(&domain) == Some(peer)
    {
        results.push(DkimResult { domain, selector: String::new(), pass: true });
    }
    results
}
