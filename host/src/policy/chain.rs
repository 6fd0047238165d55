//! Running a hook along the chain: each policy that implements it is asked in order, the
//! first answer other than "accept" wins, header edits accumulate. A policy that fails
//! (trap, deadline, memory, malformed answer) is answered for by its fail mode, logged and
//! counted — the relay itself never fails because of a policy.

use std::sync::Arc;

use super::bindings::types::{
    AccountRequest, AccountState, DkimResult, Envelope, HeaderEdits, MessageVerdict, NewAccountRequest,
    NewAccountVerdict, Recipient, Reply, RetentionDecision, StoredMessage, Verdict,
};
use super::bundle::{Bundle, Hook, LoadedPolicy};
use super::call::{self, Failure, lend_message};
use super::engine::PolicyEngine;
use super::{MessageDecision, Services};
use crate::config::FailMode;
use crate::message::ParsedMessage;
use crate::message::edit::{Edits, check_name, check_value};

/// What a bundle needs to run: the engine and the host's services.
pub(crate) struct Runtime<'a> {
    pub engine: &'a PolicyEngine,
    pub services: &'a Services,
}

/// The reply for a failing policy in `tempfail` mode.
pub fn tempfail_reply() -> Reply {
    Reply { code: 451, enhanced: "4.3.0".into(), text: "Temporary policy failure, please try again later".into() }
}

/// The reply for a failing policy in `reject` mode.
pub fn reject_reply() -> Reply {
    Reply { code: 554, enhanced: "5.3.0".into(), text: "Policy failure".into() }
}

impl Runtime<'_> {
    fn count_call(&self, policy: &LoadedPolicy, hook: Hook) {
        self.services.metrics.inc("ferrymail_policy_calls_total", &[("policy", &policy.meta.name), ("hook", hook.wit_name())]);
    }

    /// Count an answer other than "accept": what a policy decided, for the operator.
    fn count_verdict(&self, policy: &LoadedPolicy, hook: Hook, verdict: &str) {
        self.services.metrics.inc(
            "ferrymail_policy_verdicts_total",
            &[("policy", &policy.meta.name), ("hook", hook.wit_name()), ("verdict", verdict)],
        );
    }

    /// Log and count a failure; return what the fail mode answers instead (None: accept).
    fn failed(&self, policy: &LoadedPolicy, hook: Hook, failure: &Failure) -> Option<Reply> {
        let kind = failure.kind.as_str();
        self.services.metrics.inc(
            "ferrymail_policy_failures_total",
            &[("policy", &policy.meta.name), ("hook", hook.wit_name()), ("kind", kind)],
        );
        let mode = match policy.fail_mode {
            FailMode::Tempfail => "tempfail",
            FailMode::Reject => "reject",
            FailMode::Accept => "accept",
        };
        tracing::warn!(policy = %policy.meta.name, hook = %hook, kind, fail_mode = mode, "policy failed: {}", failure.detail);
        match policy.fail_mode {
            FailMode::Tempfail => Some(tempfail_reply()),
            FailMode::Reject => Some(reject_reply()),
            FailMode::Accept => None,
        }
    }

    fn verdict_chain(
        &self,
        bundle: &Bundle,
        hook: Hook,
        mut ask: impl FnMut(&LoadedPolicy, &wasmtime::component::ComponentExportIndex) -> Result<Verdict, Failure>,
    ) -> Verdict {
        for (policy, export) in bundle.with_hook(hook) {
            self.count_call(policy, hook);
            match ask(policy, export).and_then(checked_verdict) {
                Ok(Verdict::Accept) => {}
                Ok(verdict) => {
                    self.count_verdict(policy, hook, verdict_name(&verdict));
                    return verdict;
                }
                Err(failure) => {
                    if let Some(reply) = self.failed(policy, hook, &failure) {
                        return fail_verdict(reply);
                    }
                }
            }
        }
        Verdict::Accept
    }

    pub fn create_account(&self, bundle: &Bundle, request: &AccountRequest) -> Verdict {
        self.verdict_chain(bundle, Hook::CreateAccount, |policy, export| {
            call::call(self.engine, self.services, policy, export, |_| Ok((request.clone(),))).map(|(v,)| v)
        })
    }

    pub fn mail_from(&self, bundle: &Bundle, envelope: &Envelope) -> Verdict {
        self.verdict_chain(bundle, Hook::MailFrom, |policy, export| {
            call::call(self.engine, self.services, policy, export, |_| Ok((envelope.clone(),))).map(|(v,)| v)
        })
    }

    pub fn rcpt_to(&self, bundle: &Bundle, envelope: &Envelope, recipient: &Recipient) -> Verdict {
        self.verdict_chain(bundle, Hook::RcptTo, |policy, export| {
            call::call(self.engine, self.services, policy, export, |_| Ok((envelope.clone(), recipient.clone())))
                .map(|(v,)| v)
        })
    }

    pub fn new_account(&self, bundle: &Bundle, request: &NewAccountRequest) -> NewAccountVerdict {
        let hook = Hook::NewAccount;
        for (policy, export) in bundle.with_hook(hook) {
            self.count_call(policy, hook);
            let answer = call::call(self.engine, self.services, policy, export, |_| Ok((request.clone(),)))
                .and_then(|(v,): (NewAccountVerdict,)| checked_new_account(v, &request.domain));
            match answer {
                Ok(NewAccountVerdict::Accept) => {}
                Ok(answer) => {
                    let name = match &answer {
                        NewAccountVerdict::Refuse(reply) => verdict_name(&fail_verdict(reply.clone())),
                        _ => "credentials",
                    };
                    self.count_verdict(policy, hook, name);
                    return answer;
                }
                Err(failure) => {
                    if let Some(reply) = self.failed(policy, hook, &failure) {
                        return NewAccountVerdict::Refuse(reply);
                    }
                }
            }
        }
        NewAccountVerdict::Accept
    }

    pub fn check_message(
        &self,
        bundle: &Bundle,
        envelope: &Envelope,
        message: &Arc<ParsedMessage>,
        dkim: &[DkimResult],
    ) -> MessageDecision {
        let hook = Hook::CheckMessage;
        let mut decision = MessageDecision::default();
        for (policy, export) in bundle.with_hook(hook) {
            self.count_call(policy, hook);
            let answer = call::call(self.engine, self.services, policy, export, |state| {
                Ok((envelope.clone(), lend_message(state, message)?, dkim.to_vec()))
            })
            .and_then(|(v,): (MessageVerdict,)| checked_message_verdict(v));
            match answer {
                Ok(v) => {
                    decision.edits.extend(edits(v.edits));
                    decision.delivery_edits.extend(edits(v.delivery_edits));
                    if v.mail_from.is_some() {
                        decision.mail_from = v.mail_from;
                    }
                    if !matches!(v.verdict, Verdict::Accept) {
                        self.count_verdict(policy, hook, verdict_name(&v.verdict));
                        decision.verdict = v.verdict;
                        return decision;
                    }
                }
                Err(failure) => {
                    if let Some(reply) = self.failed(policy, hook, &failure) {
                        decision.verdict = fail_verdict(reply);
                        return decision;
                    }
                }
            }
        }
        decision
    }

    /// Retention never deletes because a policy failed: a failure keeps everything.
    pub fn retention(&self, bundle: &Bundle, now: u64, account: &AccountState, batch: &[StoredMessage]) -> RetentionDecision {
        let hook = Hook::Retention;
        let mut decision = RetentionDecision { delete_account: false, delete: Vec::new() };
        for (policy, export) in bundle.with_hook(hook) {
            self.count_call(policy, hook);
            let answer = call::call(self.engine, self.services, policy, export, |_| {
                Ok((now, account.clone(), batch.to_vec()))
            })
            .and_then(|(d,): (RetentionDecision,)| {
                match d.delete.iter().find(|id| !batch.iter().any(|m| m.id == **id)) {
                    Some(id) => Err(Failure::malformed(format!("retention named message {id}, which is not in the batch"))),
                    None => Ok(d),
                }
            });
            match answer {
                Ok(d) => {
                    decision.delete_account |= d.delete_account;
                    for id in d.delete {
                        if !decision.delete.contains(&id) {
                            decision.delete.push(id);
                        }
                    }
                }
                Err(failure) => {
                    self.failed(policy, hook, &failure);
                    return RetentionDecision { delete_account: false, delete: Vec::new() };
                }
            }
        }
        decision
    }
}

fn verdict_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Accept => "accept",
        Verdict::Reject(_) => "reject",
        Verdict::Defer(_) => "defer",
    }
}

fn fail_verdict(reply: Reply) -> Verdict {
    if reply.code >= 500 { Verdict::Reject(reply) } else { Verdict::Defer(reply) }
}

fn edits(e: HeaderEdits) -> Edits {
    Edits { remove: e.remove, set: e.set }
}

/// A reply a client can be shown: right code class, a plausible enhanced code, one line.
fn check_reply(reply: &Reply, class: std::ops::RangeInclusive<u16>) -> Result<(), Failure> {
    if !class.contains(&reply.code) {
        return Err(Failure::malformed(format!("reply code {} outside {}-{}", reply.code, class.start(), class.end())));
    }
    if !reply.enhanced.is_empty() {
        let parts: Vec<&str> = reply.enhanced.split('.').collect();
        let digits_ok = parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        let class_ok = parts.first().is_some_and(|c| c.as_bytes() == [b'0' + (reply.code / 100) as u8]);
        if !digits_ok || !class_ok {
            return Err(Failure::malformed(format!("bad enhanced status code {:?} for {}", reply.enhanced, reply.code)));
        }
    }
    if reply.text.len() > 400 || reply.text.chars().any(char::is_control) {
        return Err(Failure::malformed("reply text too long or not one line"));
    }
    Ok(())
}

fn checked_verdict(verdict: Verdict) -> Result<Verdict, Failure> {
    match &verdict {
        Verdict::Accept => {}
        Verdict::Reject(reply) => check_reply(reply, 500..=599)?,
        Verdict::Defer(reply) => check_reply(reply, 400..=499)?,
    }
    Ok(verdict)
}

const MAX_EDITS: usize = 64;

fn checked_message_verdict(v: MessageVerdict) -> Result<MessageVerdict, Failure> {
    let v = MessageVerdict { verdict: checked_verdict(v.verdict)?, ..v };
    for e in [&v.edits, &v.delivery_edits] {
        if e.remove.len() + e.set.len() > MAX_EDITS {
            return Err(Failure::malformed(format!("more than {MAX_EDITS} header edits")));
        }
        for name in e.remove.iter().chain(e.set.iter().map(|(n, _)| n)) {
            check_name(name).map_err(Failure::malformed)?;
        }
        for (_, value) in &e.set {
            check_value(value).map_err(Failure::malformed)?;
        }
    }
    if let Some(sender) = &v.mail_from
        && (sender.len() > 320 || sender.chars().any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>'))
    {
        return Err(Failure::malformed("invalid envelope sender"));
    }
    Ok(v)
}

fn checked_new_account(v: NewAccountVerdict, domain: &str) -> Result<NewAccountVerdict, Failure> {
    match &v {
        NewAccountVerdict::Accept => {}
        NewAccountVerdict::Refuse(reply) => check_reply(reply, 400..=599)?,
        NewAccountVerdict::Credentials(c) => {
            let (local, d) = c.address.rsplit_once('@').ok_or_else(|| Failure::malformed("credentials without @"))?;
            let local_ok = !local.is_empty() && local.len() <= 64 && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !local_ok || !d.eq_ignore_ascii_case(domain) {
                return Err(Failure::malformed(format!("credentials for an address not of {domain}")));
            }
            if c.password.is_empty() || c.password.len() > 256 || c.password.chars().any(char::is_control) {
                return Err(Failure::malformed("unusable password in credentials"));
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
        Reply { code, enhanced: enhanced.into(), text: text.into() }
    }

    #[test]
    fn replies_are_checked() {
        assert!(checked_verdict(Verdict::Reject(reply(523, "", "Encryption Needed"))).is_ok());
        assert!(checked_verdict(Verdict::Defer(reply(450, "4.7.1", "slow down"))).is_ok());
        assert!(checked_verdict(Verdict::Reject(reply(250, "", "ok?"))).is_err(), "reject must be 5xx");
        assert!(checked_verdict(Verdict::Defer(reply(550, "", "x"))).is_err(), "defer must be 4xx");
        assert!(checked_verdict(Verdict::Defer(reply(451, "5.1.1", "x"))).is_err(), "class mismatch");
        assert!(checked_verdict(Verdict::Defer(reply(451, "4.x.1", "x"))).is_err());
        assert!(checked_verdict(Verdict::Reject(reply(550, "", "a\r\n250 smuggled"))).is_err());
    }

    #[test]
    fn credentials_are_checked() {
        let creds = |address: &str, password: &str| {
            NewAccountVerdict::Credentials(super::super::bindings::types::Credentials {
                address: address.into(),
                password: password.into(),
            })
        };
        assert!(checked_new_account(creds("abc123xyz@x.org", "secretsecret"), "x.org").is_ok());
        assert!(checked_new_account(creds("abc@other.org", "secretsecret"), "x.org").is_err());
        assert!(checked_new_account(creds("a b@x.org", "secretsecret"), "x.org").is_err());
        assert!(checked_new_account(creds("abc@x.org", ""), "x.org").is_err());
    }
}
