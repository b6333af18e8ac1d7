//! The real SMTP server of the email tests: `test-support`'s, which the end-to-end tests of the
//! account pages share.

pub use test_support::smtp_sink::{free_port, SmtpSink};
