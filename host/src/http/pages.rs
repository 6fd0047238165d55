//! The relay's web pages (index with the invite QR code, info, privacy policy), the mail
//! client autoconfig file and robots.txt. They depend only on the config, so they are rendered
//! once, at start. No scripts, no cookies, nothing loaded from elsewhere.

use std::sync::Arc;

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::config::Config;

const LAYOUT: &str = include_str!("pages/layout.html");
const INDEX: &str = include_str!("pages/index.html");
const INFO: &str = include_str!("pages/info.html");
const PRIVACY: &str = include_str!("pages/privacy.html");

const ROBOTS: &str = "User-agent: *\nDisallow: /new\nAllow: /\n";

/// The URL behind the invite QR code: the app posts to it for an account.
pub fn invite_link(domain: &str) -> String {
    format!("DCACCOUNT:https://{}/new", url_host(domain))
}

/// The domain as it appears in a URL (an IP literal without its brackets, IPv6 with them).
pub fn url_host(domain: &str) -> String {
    match crate::dns::ip_literal(domain) {
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        Some(ip) => ip.to_string(),
        None => domain.to_string(),
    }
}

pub fn routes<S: Clone + Send + Sync + 'static>(config: &Config) -> Router<S> {
    let pages = Arc::new(Rendered::new(config));
    let html = |page: fn(&Rendered) -> &String| {
        let pages = pages.clone();
        get(move || async move { ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "max-age=300")], page(&pages).clone()) })
    };
    let autoconfig = {
        let xml = pages.autoconfig.clone();
        get(move || async move { ([(CONTENT_TYPE, "application/xml; charset=utf-8")], xml).into_response() })
    };
    Router::new()
        .route("/", html(|p| &p.index))
        .route("/index.html", html(|p| &p.index))
        .route("/info.html", html(|p| &p.info))
        .route("/info", html(|p| &p.info))
        .route("/privacy.html", html(|p| &p.privacy))
        .route("/privacy", html(|p| &p.privacy))
        .route("/.well-known/autoconfig/mail/config-v1.1.xml", autoconfig.clone())
        // Where Thunderbird looks on `autoconfig.<domain>`.
        .route("/mail/config-v1.1.xml", autoconfig)
        .route("/robots.txt", get(|| async { ([(CONTENT_TYPE, "text/plain; charset=utf-8")], ROBOTS) }))
}

struct Rendered {
    index: String,
    info: String,
    privacy: String,
    autoconfig: String,
}

impl Rendered {
    fn new(config: &Config) -> Rendered {
        let domain = escape(&config.mail_domain);
        let not_given = "<em>(not given by the operator)</em>".to_string();
        let given = |value: &str| if value.trim().is_empty() { not_given.clone() } else { escape(value.trim()) };
        let values: Vec<(&str, String)> = vec![
            ("domain", domain.clone()),
            ("invite_link", escape(&invite_link(&config.mail_domain))),
            ("qr_svg", qr_svg(&invite_link(&config.mail_domain))),
            ("max_user_send_per_minute", config.max_user_send_per_minute.to_string()),
            ("max_user_send_burst_size", config.max_user_send_burst_size.to_string()),
            ("max_mailbox_size", human_size(config.max_mailbox_size.0)),
            ("max_message_size", human_size(config.max_message_size.0)),
            ("delete_mails_after", config.delete_mails_after.to_string()),
            ("delete_large_after", config.delete_large_after.to_string()),
            ("delete_inactive_users_after", config.delete_inactive_users_after.to_string()),
            // Inside href="mailto:..." too: escaped, never markup.
            ("privacy_mail", if config.privacy_mail.trim().is_empty() { "(not given by the operator)".into() } else { escape(config.privacy_mail.trim()) }),
            ("privacy_postal", if config.privacy_postal.trim().is_empty() { not_given.clone() } else { escape(config.privacy_postal.trim()).replace('\n', "<br>\n") }),
            ("privacy_pdo", given(&config.privacy_pdo)),
            ("privacy_supervisor", given(&config.privacy_supervisor)),
        ];
        let page = |title: &str, body: &str| {
            let layout = fill(LAYOUT, &[("title", escape(title)), ("domain", domain.clone())]);
            // The body is filled before it goes into the layout: values never pass through twice.
            layout.replacen("{body}", &fill(body, &values), 1)
        };
        Rendered {
            index: page("Welcome", INDEX),
            info: page("Info", INFO),
            privacy: page("Privacy policy", PRIVACY),
            autoconfig: autoconfig(config),
        }
    }
}

/// Replace each `{name}` of `values` in `template`.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 4096);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name = after.find('}').map(|end| &after[..end]);
        match name.and_then(|name| values.iter().find(|(key, _)| *key == name)) {
            Some((key, value)) => {
                out.push_str(value);
                rest = &after[key.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "500 MiB", "30 MiB", "1.5 GiB": sizes as chatmail.ini writes them (powers of 1024).
fn human_size(bytes: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in units {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if (value - value.round()).abs() < 0.05 { format!("{} {unit}", value.round()) } else { format!("{value:.1} {unit}") };
        }
    }
    format!("{bytes} bytes")
}

/// The invite as an inline SVG QR code (dark modules on white, with the quiet zone).
fn qr_svg(text: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(256, 256)
            .quiet_zone(true)
            .dark_color(qrcode::render::svg::Color("#000000"))
            .light_color(qrcode::render::svg::Color("#ffffff"))
            .build()
            // The document's own XML declaration does not belong inside HTML.
            .split_once("<svg ")
            .map(|(_, svg)| format!("<svg role=\"img\" aria-label=\"Invite QR code\" {svg}"))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Mozilla's autoconfig format: the app (and Thunderbird) learn servers, ports and login from it.
fn autoconfig(config: &Config) -> String {
    let host = escape(url_host(&config.mail_domain).trim_matches(['[', ']']));
    let domain = escape(&config.mail_domain);
    let listen = &config.listen;
    let server = |kind: &str, protocol: &str, port: u16, socket: &str| {
        format!(
            "    <{kind} type=\"{protocol}\">\n      <hostname>{host}</hostname>\n      <port>{port}</port>\n      \
             <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      \
             <username>%EMAILADDRESS%</username>\n    </{kind}>\n"
        )
    };
    let mut servers = String::new();
    servers += &server("incomingServer", "imap", listen.imaps.port(), "SSL");
    servers += &server("incomingServer", "imap", listen.imap.port(), "STARTTLS");
    servers += &server("incomingServer", "imap", listen.https.port(), "SSL");
    servers += &server("outgoingServer", "smtp", listen.submissions.port(), "SSL");
    servers += &server("outgoingServer", "smtp", listen.submission.port(), "STARTTLS");
    servers += &server("outgoingServer", "smtp", listen.https.port(), "SSL");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{domain}\">\n    \
         <domain>{domain}</domain>\n    <displayName>{domain} chatmail</displayName>\n    \
         <displayShortName>{domain}</displayShortName>\n{servers}  </emailProvider>\n</clientConfig>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_once_and_escaped() {
        let values = [("a", "<x>".to_string()), ("b", "{a}".to_string())];
        assert_eq!(fill("{a} {b} {c} { a }", &values), "<x> {a} {c} { a }");
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn sizes_in_words() {
        assert_eq!(human_size(500 << 20), "500 MiB");
        assert_eq!(human_size(31_457_280), "30 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(100), "100 bytes");
    }

    #[test]
    fn pages_carry_the_config() {
        let mut config = Config::parse("mail_domain = \"c.example.org\"\nmax_user_send_per_minute = 42\ndelete_mails_after = 17")
            .unwrap()
            .config;
        config.privacy_mail = "privacy@example.org".into();
        config.privacy_postal = "Jane <Doe>\nMain Street 1".into();
        let pages = Rendered::new(&config);
        assert!(pages.info.contains("<strong>42</strong>") && pages.info.contains("<strong>17</strong>"));
        assert!(pages.info.contains("500 MiB"));
        assert!(pages.privacy.contains("Jane &lt;Doe&gt;<br>\nMain Street 1"));
        assert!(pages.privacy.contains("mailto:privacy@example.org"));
        assert!(pages.privacy.contains("(not given by the operator)"), "empty privacy_pdo");
        assert!(pages.index.contains("<svg") && pages.index.contains("DCACCOUNT:https://c.example.org/new"));
        for page in [&pages.index, &pages.info, &pages.privacy] {
            assert!(!page.contains("{domain}") && !page.contains("{title}"), "a placeholder is left");
            assert!(!page.contains("<script") && !page.contains(" src=") && !page.contains("<link"), "no scripts, nothing loaded");
        }
        assert!(pages.autoconfig.contains("<port>993</port>") && pages.autoconfig.contains("%EMAILADDRESS%"));
    }
}
