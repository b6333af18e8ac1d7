//! The messages auth-api sends (issue 15), in text and HTML. The HTML is built with `maud`, which
//! escapes every value; it has no image, stylesheet or script, so that it shows the same in
//! every client and loads nothing from anywhere. Links point at the hosted pages under
//! `AUTH_PUBLIC_URL` ([`crate::pages`]); their tokens are single use.

use maud::{html, Markup, DOCTYPE};

use super::Email;

/// The `kind` of a verification mail (metrics, per-recipient limits).
pub const VERIFY_EMAIL: &str = "verify_email";
/// The `kind` of the mail telling an owner that someone signed up with their address.
pub const ACCOUNT_EXISTS: &str = "account_exists";
/// The `kind` of a password-reset mail.
pub const PASSWORD_RESET: &str = "password_reset";

/// One message: a title, paragraphs, and at most one link to act on.
struct Message<'a> {
    kind: &'static str,
    recipient: &'a str,
    subject: &'a str,
    paragraphs: &'a [&'a str],
    link: Option<(&'a str, &'a str)>,
    footer: &'a str,
}

impl Message<'_> {
    fn email(&self) -> Email {
        let mut text = String::new();
        for paragraph in self.paragraphs {
            text.push_str(paragraph);
            text.push_str("\n\n");
        }
        if let Some((label, url)) = self.link {
            text.push_str(&format!("{label}:\n{url}\n\n"));
        }
        text.push_str(self.footer);
        text.push('\n');
        Email {
            kind: self.kind.to_owned(),
            recipient: self.recipient.to_owned(),
            subject: self.subject.to_owned(),
            text,
            html: self.html().into_string(),
        }
    }

    fn html(&self) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (self.subject) }
                }
                body {
                    h1 { (self.subject) }
                    @for paragraph in self.paragraphs {
                        p { (paragraph) }
                    }
                    @if let Some((label, url)) = self.link {
                        p { a href=(url) { (label) } }
                        p { "Or paste this address into your browser: " (url) }
                    }
                    p { small { (self.footer) } }
                }
            }
        }
    }
}

/// A link to prove `recipient`, valid `hours`.
pub fn verify_email(recipient: &str, link: &str, hours: u64) -> Email {
    let valid = format!("The link works once, for {hours} hours.");
    Message {
        kind: VERIFY_EMAIL,
        recipient,
        subject: "Confirm your email address",
        paragraphs: &[
            "Someone, we hope you, signed up with this email address. Confirm that it is yours:",
            &valid,
        ],
        link: Some(("Confirm my email address", link)),
        footer: "If you did not sign up, ignore this message: nothing happens without the link.",
    }
    .email()
}

/// Tells the owner of `recipient` that someone signed up with it while it already has an
/// account (the signup's answer said nothing: SECURITY.md), with the way back if they forgot
/// the password.
pub fn account_exists(recipient: &str, forgot_link: &str) -> Email {
    Message {
        kind: ACCOUNT_EXISTS,
        recipient,
        subject: "You already have an account",
        paragraphs: &[
            "Someone, perhaps you, tried to sign up with this email address, which already has an \
             account. No new account was made and nothing changed.",
            "If you have forgotten your password, you can set a new one:",
        ],
        link: Some(("Reset my password", forgot_link)),
        footer: "If this was not you, you can ignore this message.",
    }
    .email()
}

/// A link to set a new password for `recipient`, valid `minutes`.
pub fn password_reset(recipient: &str, link: &str, minutes: u64) -> Email {
    let valid = format!(
        "The link works once, for {minutes} minutes. Setting a new password signs you out \
         everywhere."
    );
    Message {
        kind: PASSWORD_RESET,
        recipient,
        subject: "Reset your password",
        paragraphs: &[
            "Someone, we hope you, asked to reset the password of the account with this email \
             address.",
            &valid,
        ],
        link: Some(("Choose a new password", link)),
        footer: "If you did not ask, ignore this message: your password stays as it is.",
    }
    .email()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parts_carry_the_link_and_the_html_escapes_it() {
        let link = "https://example.com/auth/account/verify?token=abc&x=\"<y>\"";
        let mail = verify_email("ada@example.com", link, 24);
        assert!(mail.text.contains(link), "{}", mail.text);
        assert!(
            mail.html.contains(
                "https://example.com/auth/account/verify?token=abc&amp;x=&quot;&lt;y&gt;&quot;"
            ),
            "{}",
            mail.html
        );
        assert!(!mail.html.contains("<y>"));
        assert!(!mail.html.contains("<script") && !mail.html.contains("<img"));
        assert_eq!(mail.kind, VERIFY_EMAIL);
        assert_eq!(mail.recipient, "ada@example.com");
    }

    #[test]
    fn each_message_names_its_kind_and_lifetime() {
        let reset = password_reset("ada@example.com", "https://x/r?token=t", 60);
        assert_eq!(reset.kind, PASSWORD_RESET);
        assert!(reset.text.contains("60 minutes"));
        let exists = account_exists("ada@example.com", "https://x/forgot");
        assert_eq!(exists.kind, ACCOUNT_EXISTS);
        assert!(exists.text.contains("https://x/forgot"));
    }
}
