//! [`AuthMethod`]: how a session's user proved who they are, carried by its access tokens as
//! the `amr` claim (RFC 8176, OIDC Core §2).

/// How the user authenticated when the session opened. Stored with the session (so that a
/// refresh keeps it) as [`AuthMethod::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A password login: RFC 8176's `pwd`.
    Password,
    /// A sign-in through an external OAuth 2.0 / OpenID Connect provider. RFC 8176 registers
    /// no value for federation; `oauth` is the word GoTrue's `amr` uses for it.
    External,
    /// A password login completed with a TOTP code or a recovery code (issue 15): RFC 8176's
    /// `pwd` and `otp`. Stored as `pwd+otp`.
    PasswordAndTotp,
}

impl AuthMethod {
    /// The stored form; for a single method also its `amr` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::External => "oauth",
            Self::PasswordAndTotp => "pwd+otp",
        }
    }

    /// The `amr` claim: every method used, in RFC 8176's words.
    pub fn amr(self) -> &'static [&'static str] {
        match self {
            Self::Password => &["pwd"],
            Self::External => &["oauth"],
            Self::PasswordAndTotp => &["pwd", "otp"],
        }
    }

    /// The assurance level, as the `acr` claim: NIST SP 800-63B's `aal2` for a password and a
    /// TOTP code (two factors of different kinds), `aal1` for one factor. An external sign-in
    /// is `aal1`: the provider's own assurance is not carried through (its `acr` is not asked
    /// for, nor trusted).
    pub fn acr(self) -> &'static str {
        match self {
            Self::Password | Self::External => "aal1",
            Self::PasswordAndTotp => "aal2",
        }
    }

    /// The method stored as `value`; `None` for anything this version does not write.
    pub fn from_stored(value: &str) -> Option<Self> {
        [Self::Password, Self::External, Self::PasswordAndTotp]
            .into_iter()
            .find(|method| method.as_str() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_nothing_else_parses() {
        for method in [
            AuthMethod::Password,
            AuthMethod::External,
            AuthMethod::PasswordAndTotp,
        ] {
            assert_eq!(AuthMethod::from_stored(method.as_str()), Some(method));
        }
        for other in ["", "PWD", "otp", "pwd ", "oidc", "otp+pwd", "pwd+otp "] {
            assert_eq!(AuthMethod::from_stored(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_second_factor_adds_otp_to_the_amr() {
        assert_eq!(AuthMethod::Password.amr(), ["pwd"]);
        assert_eq!(AuthMethod::External.amr(), ["oauth"]);
        assert_eq!(AuthMethod::PasswordAndTotp.amr(), ["pwd", "otp"]);
    }
}
