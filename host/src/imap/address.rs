//! RFC 5322 address lists as IMAP's ENVELOPE gives them (RFC 3501 §7.4.2, RFC 9051 §7.5.2):
//! display name, source route, mailbox and host, each as written in the header. Groups are
//! bracketed by a start marker (`NIL NIL "group" NIL`) and an end marker (all NIL); comments
//! are dropped, except that a comment names an address that has no display name (the old
//! `user@host (Name)` form); encoded words stay encoded, as Dovecot sends them; obsolete
//! syntax (routes, dotted phrases, spaces around dots) is read, not refused.

/// One address of an ENVELOPE: `None` fields are NIL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeAddress {
    pub name: Option<String>,
    pub adl: Option<String>,
    pub mailbox: Option<String>,
    pub host: Option<String>,
}

/// What an address lacks is filled in as Dovecot does, so that no address looks like a group
/// marker (a NIL host) by accident.
const MISSING_MAILBOX: &str = "MISSING_MAILBOX";
const MISSING_DOMAIN: &str = "MISSING_DOMAIN";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom, or (true) a quoted string's content; and whether space (or a comment) came
    /// before it, which a display name keeps.
    Word(String, bool, bool),
    Special(char),
    Comment(String),
    /// `[...]`, brackets included.
    DomainLiteral(String),
}

fn tokens(value: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    let mut spaced = false;
    while let Some(&c) = chars.peek() {
        let was_spaced = std::mem::take(&mut spaced);
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
                spaced = true;
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => text.extend(chars.next()),
                        '\r' | '\n' => {}
                        c => text.push(c),
                    }
                }
                out.push(Token::Word(text, true, was_spaced));
            }
            '(' => {
                chars.next();
                let (mut depth, mut text) = (1, String::new());
                while let Some(c) = chars.next() {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        '\\' => {
                            text.extend(chars.next());
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    if c != '\r' && c != '\n' {
                        text.push(c);
                    }
                }
                out.push(Token::Comment(text.trim().to_string()));
                spaced = true;
            }
            '[' => {
                let mut text = String::new();
                for c in chars.by_ref() {
                    text.push(c);
                    if c == ']' {
                        break;
                    }
                }
                out.push(Token::DomainLiteral(text));
            }
            '<' | '>' | '@' | ',' | ';' | ':' | '.' => {
                chars.next();
                out.push(Token::Special(c));
            }
            _ => {
                let mut atom = String::new();
                while let Some(&c) = chars.peek() {
                    if " \t\r\n\"(<>@,;:.[".contains(c) {
                        break;
                    }
                    atom.push(c);
                    chars.next();
                }
                out.push(Token::Word(atom, false, was_spaced));
            }
        }
    }
    out
}

/// The addresses of one header field's value, groups marked.
pub fn parse(value: &str) -> Vec<EnvelopeAddress> {
    let tokens = tokens(value);
    let mut out = Vec::new();
    let mut rest = &tokens[..];
    let mut in_group = false;
    while !rest.is_empty() {
        // One element: up to a ',' or ';' outside angle brackets, or a group's ':'.
        let mut angle = false;
        let mut end = rest.len();
        for (i, token) in rest.iter().enumerate() {
            match token {
                Token::Special('<') => angle = true,
                Token::Special('>') => angle = false,
                Token::Special(',' | ';') if !angle => {
                    end = i;
                    break;
                }
                Token::Special(':') if !angle && !in_group => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let (element, separator) = (&rest[..end], rest.get(end));
        rest = rest.get(end + 1..).unwrap_or_default();
        match separator {
            Some(Token::Special(':')) => {
                out.push(EnvelopeAddress { name: None, adl: None, mailbox: Some(phrase(element).unwrap_or_default()), host: None });
                in_group = true;
                // `group:;`: an empty group ends at once.
                if let Some(Token::Special(';')) = rest.first() {
                    rest = &rest[1..];
                    out.push(group_end());
                    in_group = false;
                }
                continue;
            }
            _ => {
                if let Some(address) = mailbox(element) {
                    out.push(address);
                }
                if in_group && matches!(separator, Some(Token::Special(';'))) {
                    out.push(group_end());
                    in_group = false;
                }
            }
        }
    }
    if in_group {
        out.push(group_end());
    }
    out
}

fn group_end() -> EnvelopeAddress {
    EnvelopeAddress { name: None, adl: None, mailbox: None, host: None }
}

/// Words (and the dots of obsolete phrases) as one display name.
fn phrase(tokens: &[Token]) -> Option<String> {
    let mut text = String::new();
    for token in tokens {
        match token {
            Token::Word(word, _, spaced) => {
                if !text.is_empty() && *spaced {
                    text.push(' ');
                }
                text.push_str(word);
            }
            Token::Special('.') => text.push('.'),
            _ => {}
        }
    }
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// One mailbox: `phrase <route:local@domain>` or `local@domain (comment)`.
fn mailbox(tokens: &[Token]) -> Option<EnvelopeAddress> {
    let comment = tokens.iter().find_map(|t| match t {
        Token::Comment(c) if !c.is_empty() => Some(c.clone()),
        _ => None,
    });
    let meaningful: Vec<&Token> = tokens.iter().filter(|t| !matches!(t, Token::Comment(_))).collect();
    if meaningful.is_empty() {
        return None;
    }
    let (name, spec) = match meaningful.iter().position(|t| **t == Token::Special('<')) {
        Some(open) => {
            let close = meaningful.iter().position(|t| **t == Token::Special('>')).unwrap_or(meaningful.len());
            let name_tokens: Vec<Token> = meaningful[..open].iter().map(|t| (*t).clone()).collect();
            (phrase(&name_tokens).or(comment), meaningful[open + 1..close.max(open + 1)].to_vec())
        }
        None => (comment, meaningful),
    };
    // A source route: `@a,@b:` before the address.
    let (adl, spec) = match spec.iter().position(|t| **t == Token::Special(':')) {
        Some(colon) if spec.first() == Some(&&Token::Special('@')) => (Some(joined(&spec[..colon])), spec[colon + 1..].to_vec()),
        _ => (None, spec),
    };
    let at = spec.iter().rposition(|t| **t == Token::Special('@'));
    let (local, domain) = match at {
        Some(at) => (joined(&spec[..at]), joined(&spec[at + 1..])),
        None => (joined(&spec), String::new()),
    };
    if local.is_empty() && domain.is_empty() && name.is_none() {
        return None;
    }
    Some(EnvelopeAddress {
        name,
        adl,
        mailbox: Some(if local.is_empty() { MISSING_MAILBOX.to_string() } else { local }),
        host: Some(if domain.is_empty() { MISSING_DOMAIN.to_string() } else { domain }),
    })
}

/// Tokens written together again, without the spaces obsolete syntax allows around dots.
fn joined(tokens: &[&Token]) -> String {
    let mut text = String::new();
    for token in tokens {
        match token {
            Token::Word(word, true, _) if word.chars().any(|c| " \"\\()<>@,;:[]".contains(c)) || word.is_empty() => {
                text.push('"');
                for c in word.chars() {
                    if c == '"' || c == '\\' {
                        text.push('\\');
                    }
                    text.push(c);
                }
                text.push('"');
            }
            Token::Word(word, ..) => text.push_str(word),
            Token::Special(c) => text.push(*c),
            Token::DomainLiteral(literal) => text.push_str(literal),
            Token::Comment(_) => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: Option<&str>, adl: Option<&str>, mailbox: Option<&str>, host: Option<&str>) -> EnvelopeAddress {
        let s = |v: Option<&str>| v.map(str::to_string);
        EnvelopeAddress { name: s(name), adl: s(adl), mailbox: s(mailbox), host: s(host) }
    }

    #[test]
    fn plain_named_and_commented_addresses() {
        assert_eq!(parse("a@x.test"), [addr(None, None, Some("a"), Some("x.test"))]);
        assert_eq!(
            parse("\"Doe, John\" <john@x.test>, Mary Smith <mary@y.test>"),
            [addr(Some("Doe, John"), None, Some("john"), Some("x.test")), addr(Some("Mary Smith"), None, Some("mary"), Some("y.test"))]
        );
        assert_eq!(parse("john@x.test (John Doe)"), [addr(Some("John Doe"), None, Some("john"), Some("x.test"))], "old-style name");
        assert_eq!(
            parse("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>"),
            [addr(Some("Pete"), None, Some("pete"), Some("silly.test"))],
            "comments dropped"
        );
        assert_eq!(parse("=?utf-8?q?J=C3=B6rg?= <j@x.test>"), [addr(Some("=?utf-8?q?J=C3=B6rg?="), None, Some("j"), Some("x.test"))]);
        assert_eq!(parse("Joe Q. Public <john.q.public@example.com>")[0].name.as_deref(), Some("Joe Q. Public"));
        assert_eq!(parse("john . q . public @ example . com")[0], addr(None, None, Some("john.q.public"), Some("example.com")));
        assert_eq!(parse("\"odd local\"@[192.0.2.1]")[0], addr(None, None, Some("\"odd local\""), Some("[192.0.2.1]")));
        assert!(parse("").is_empty() && parse(" , ,").is_empty());
    }

    #[test]
    fn groups_routes_and_broken_addresses() {
        assert_eq!(
            parse("A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, after@x.test"),
            [
                addr(None, None, Some("A Group"), None),
                addr(Some("Ed Jones"), None, Some("c"), Some("a.test")),
                addr(None, None, Some("joe"), Some("where.test")),
                addr(Some("John"), None, Some("jdoe"), Some("one.test")),
                addr(None, None, None, None),
                addr(None, None, Some("after"), Some("x.test")),
            ]
        );
        assert_eq!(parse("Undisclosed recipients:;"), [addr(None, None, Some("Undisclosed recipients"), None), addr(None, None, None, None)]);
        assert_eq!(
            parse("Route <@relay1.test,@relay2.test:user@final.test>"),
            [addr(Some("Route"), Some("@relay1.test,@relay2.test"), Some("user"), Some("final.test"))]
        );
        assert_eq!(parse("nodomain")[0], addr(None, None, Some("nodomain"), Some(MISSING_DOMAIN)));
        assert_eq!(parse("Unclosed group: a@x.test").last(), Some(&addr(None, None, None, None)), "an unclosed group is closed");
    }
}
