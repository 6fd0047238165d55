//! Delivery status notifications (RFC 3464) for mail that could not be delivered: from
//! `MAILER-DAEMON@<domain>`, `Auto-Submitted`, `multipart/report` — the shape the encryption
//! policy lets through as a bounce — with the original message's header, never its body.

use crate::message::header::body_start;

pub struct Failed<'a> {
    pub recipient: &'a str,
    /// The last reply or error, e.g. `550 5.1.1 User unknown`.
    pub reason: &'a str,
}

/// The DSN for `sender` about `failed` recipients of `original`.
pub fn report(domain: &str, sender: &str, original: &[u8], failed: &[Failed<'_>], now_secs: u64, id: u64) -> Vec<u8> {
    let date = chrono::DateTime::from_timestamp(now_secs as i64, 0).unwrap_or_default().to_rfc2822();
    let boundary = format!("ferrymail-dsn-{id:x}");
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{domain}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <dsn.{id:x}@{domain}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail system at {domain}.\r\n\
         Your message could not be delivered to:\r\n\r\n"
    );
    for f in failed {
        out.push_str(&format!("<{}>: {}\r\n", f.recipient, one_line(f.reason)));
    }
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; {domain}\r\nArrival-Date: {date}\r\n"
    ));
    for f in failed {
        out.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\n",
            f.recipient,
            status(f.reason),
            one_line(f.reason)
        ));
    }
    out.push_str(&format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&original[..body_start(original)]);
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The enhanced status code in a reply (`5.1.1`), or a generic permanent failure.
fn status(reason: &str) -> String {
    reason
        .split_whitespace()
        .take(2)
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .unwrap_or_else(|| "5.0.0".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ParsedMessage;

    #[test]
    fn a_report_that_parses_as_a_bounce() {
        let original = b"From: a@x.test\r\nSubject: [...]\r\n\r\nsecret body\r\n";
        let failed = [Failed { recipient: "b@y.test", reason: "550 5.1.1 <b@y.test>: User unknown" }];
        let dsn = report("x.test", "a@x.test", original, &failed, 1_800_000_000, 7);
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(text.contains("Status: 5.1.1") && text.contains("Final-Recipient: rfc822; b@y.test"));
        assert!(!text.contains("secret body"), "the original body never travels back");
        let parsed = ParsedMessage::parse(dsn).unwrap();
        assert_eq!(parsed.parts()[0].content_type, "multipart/report");
        assert_eq!(parsed.addresses("from"), ["mailer-daemon@x.test"]);
        assert_eq!(status("timed out"), "5.0.0");
    }
}
