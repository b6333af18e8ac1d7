//! Sign-in through an external provider (issue 14): [`start`] (`/authorize`), [`finish`]
//! (`/callback`) and [`exchange`] (the app's one-time code for our tokens, `/token`).
//!
//! The browser carries the flow, the app never sees a token in a URL:
//! 1. The app sends the browser to `/authorize` with the provider, where to come back
//!    (`redirect_to`, allow-listed) and its own PKCE challenge. [`start`] stores the flow under
//!    the hash of a random `state`, with a `nonce` and our own PKCE verifier (sealed) for the
//!    provider, and the hash of a browser-binding cookie; the browser goes to the provider.
//! 2. The provider sends the browser back to `/callback`. [`finish`] takes the flow (single use),
//!    checks that the same browser brought it back (the cookie), the RFC 9207 issuer, exchanges
//!    the code with our verifier, verifies the ID token (or reads GitHub's API), maps the
//!    identity to a user and sends the browser to `redirect_to` with a one-time code.
//! 3. The app exchanges the code, with the verifier of its challenge, at [`exchange`]: an
//!    ordinary session, whose tokens say `amr: ["oauth"]`.
//!
//! Which account an identity signs in as: a known `(provider, subject)` is its user; an unknown
//! one creates a user without a password, under the email the provider asserts as verified; or,
//! only where the operator allowed it for that provider, is linked to the existing account with
//! that verified email. Linking is the dangerous case: it hands the account to whoever the
//! provider says owns the email, so a provider that asserts emails it has not verified, or an
//! email whose domain changed hands, is an account takeover; hence off by default, and never
//! for an unverified email.

use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use url::Url;

use super::{access::TokenPair, accounts::DEFAULT_ROLES, sessions, Error, Result};
use crate::{
    domain::{AuthMethod, Email},
    oidc::{
        self,
        authorize::{check_response_issuer, AuthorizationRequest},
        discovery::ProviderMetadata,
        exchange::{exchange_code, github_identity, userinfo, CodeExchange},
        id_token::Expected,
        pkce::{self, FlowSecrets},
        providers::{Provider, ProviderKind},
        registry::Registry,
    },
    state::AppState,
    store::{
        ExternalIdentity, InsertIdentity, InsertPasswordlessUser, SignInCode, SignInFlow, UserRow,
    },
};

/// The browser-binding cookie: `__Host-` so that only this origin over https sets it (no
/// subdomain can plant one), SameSite=Lax because the provider's redirect back to `/callback`
/// is a cross-site top-level navigation, which a Strict cookie would not join.
pub const BINDING_COOKIE: &str = "__Host-auth-sign-in";
/// How long the one-time code lives: the app exchanges it at once.
pub const CODE_TTL_SECS: i64 = 60;
/// Longest `redirect_to` kept with a flow, in bytes of its serialisation.
pub const MAX_REDIRECT_TO_LEN: usize = 2048;
/// Longest `state`, code or binding we look at: ours are 43 characters.
const MAX_SECRET_LEN: usize = 128;

/// Why a step of the flow refused. Each has an RFC 6749 §4.1.2.1 `error` for the app, a code
/// of ours that says which check failed, and a fixed description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `redirect_to` is missing or not on the allow-list: the browser cannot be sent back.
    InvalidRedirect,
    /// The `state` is missing, unknown, expired or already used.
    InvalidState,
    /// No provider has this name (or none is configured).
    UnknownProvider,
    /// The app's `code_challenge` is missing, not S256, or malformed.
    InvalidCodeChallenge,
    /// The callback came from another browser than the one that started the flow.
    BrowserMismatch,
    /// The provider answered with an error (the user declined, the code was refused…).
    ProviderError,
    /// The callback's `iss` is not the provider's (RFC 9207: a mix-up attack).
    IssuerMismatch,
    /// The provider did not answer in time, or answered 429/5xx.
    ProviderUnavailable,
    /// The provider answered something we refuse.
    ProviderInvalidResponse,
    /// The ID token does not verify.
    InvalidIdToken,
    /// The provider gave no usable email for a new account.
    EmailRequired,
    /// A new account would get an email the provider has not verified.
    EmailNotVerified,
    /// An account with this email exists and this provider may not link to it.
    EmailInUse,
    /// The user's account is disabled.
    AccountDisabled,
    /// The identity was made at another issuer than the provider's name points at now.
    ProviderChanged,
    /// The account is not of the Workspace domain the provider is restricted to.
    HostedDomain,
    /// Our store is unavailable.
    Unavailable,
    /// Anything else on our side.
    Internal,
}

impl Reason {
    /// The RFC 6749 §4.1.2.1 `error`.
    pub fn oauth_error(self) -> &'static str {
        match self {
            Self::InvalidRedirect
            | Self::InvalidState
            | Self::UnknownProvider
            | Self::InvalidCodeChallenge => "invalid_request",
            Self::BrowserMismatch
            | Self::ProviderError
            | Self::IssuerMismatch
            | Self::InvalidIdToken
            | Self::EmailRequired
            | Self::EmailNotVerified
            | Self::EmailInUse
            | Self::AccountDisabled
            | Self::ProviderChanged
            | Self::HostedDomain => "access_denied",
            Self::ProviderUnavailable | Self::Unavailable => "temporarily_unavailable",
            Self::ProviderInvalidResponse | Self::Internal => "server_error",
        }
    }

    /// Our `error_code`: which check failed.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidRedirect => "invalid_redirect",
            Self::InvalidState => "invalid_state",
            Self::UnknownProvider => "unknown_provider",
            Self::InvalidCodeChallenge => "invalid_code_challenge",
            Self::BrowserMismatch => "browser_mismatch",
            Self::ProviderError => "provider_error",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::ProviderInvalidResponse => "provider_invalid_response",
            Self::InvalidIdToken => "invalid_id_token",
            Self::EmailRequired => "email_required",
            Self::EmailNotVerified => "email_not_verified",
            Self::EmailInUse => "email_in_use",
            Self::AccountDisabled => "account_disabled",
            Self::ProviderChanged => "provider_changed",
            Self::HostedDomain => "hosted_domain_mismatch",
            Self::Unavailable => "service_unavailable",
            Self::Internal => "internal_error",
        }
    }

    /// What happened, for the user and the app.
    pub fn description(self) -> &'static str {
        match self {
            Self::InvalidRedirect => "redirect_to is missing or not an allowed address",
            Self::InvalidState => {
                "this sign-in is unknown, expired or already used: start it again"
            }
            Self::UnknownProvider => "no sign-in provider has this name",
            Self::InvalidCodeChallenge => {
                "code_challenge must be an S256 PKCE challenge, with code_challenge_method=S256"
            }
            Self::BrowserMismatch => {
                "the sign-in was finished in another browser than it started in"
            }
            Self::ProviderError => "the provider did not sign the user in",
            Self::IssuerMismatch => {
                "the answer did not come from the provider the sign-in started at"
            }
            Self::ProviderUnavailable => "the provider is unavailable, retry later",
            Self::ProviderInvalidResponse => "the provider answered something unusable",
            Self::InvalidIdToken => "the provider's ID token is invalid",
            Self::EmailRequired => "the provider gave no email address",
            Self::EmailNotVerified => "the provider has not verified the email address",
            Self::EmailInUse => {
                "an account with this email exists; sign in to it the way it was created"
            }
            Self::AccountDisabled => "this account is disabled",
            Self::HostedDomain => "this provider accepts only accounts of its organisation",
            Self::ProviderChanged => {
                "this sign-in provider was reconfigured; ask an operator to unlink the old identity"
            }
            Self::Unavailable => "the service is unavailable, retry later",
            Self::Internal => "the sign-in failed",
        }
    }
}

/// A refused step: why, and where the browser goes (`None`: we do not know where the app is,
/// so the answer is an error page).
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub reason: Reason,
    /// The app's `redirect_to`, when the flow got that far.
    pub back_to: Option<Url>,
    /// The provider's own `error` code ([`Reason::ProviderError`]), RFC 6749 characters only.
    pub provider_error: Option<String>,
}

impl Refused {
    fn page(reason: Reason) -> Self {
        Self {
            reason,
            back_to: None,
            provider_error: None,
        }
    }

    fn back(reason: Reason, back_to: &Url) -> Self {
        Self {
            reason,
            back_to: Some(back_to.clone()),
            provider_error: None,
        }
    }

    /// Where the browser goes: `back_to` with `error`, `error_code` and `error_description`
    /// added to its query, or `None` for an error page.
    pub fn location(&self) -> Option<Url> {
        let url = self.back_to.clone()?;
        let description = match &self.provider_error {
            Some(code) => format!("{} ({code})", self.reason.description()),
            None => self.reason.description().to_owned(),
        };
        Some(with_params(
            &url,
            &[
                ("error", self.reason.oauth_error()),
                ("error_code", self.reason.code()),
                ("error_description", &description),
            ],
        ))
    }
}

/// The names of what we add to `redirect_to`.
const OWN_PARAMS: [&str; 4] = ["code", "error", "error_code", "error_description"];

/// `back_to` with `params` appended, after dropping any parameter of ours that it already had:
/// an attacker's `redirect_to=…?code=theirs` must not put a code of theirs before ours.
fn with_params(back_to: &Url, params: &[(&str, &str)]) -> Url {
    let mut url = back_to.clone();
    let kept: Vec<(String, String)> = back_to
        .query_pairs()
        .filter(|(name, _)| !OWN_PARAMS.contains(&name.as_ref()))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    url.set_query(None);
    {
        let mut query = url.query_pairs_mut();
        query.extend_pairs(kept);
        query.extend_pairs(params.iter().copied());
    }
    url
}

/// What `/authorize` received.
#[derive(Debug, Default)]
pub struct StartRequest<'a> {
    /// `provider`.
    pub provider: Option<&'a str>,
    /// `redirect_to`.
    pub redirect_to: Option<&'a str>,
    /// `code_challenge`: the app's PKCE challenge for the one-time code.
    pub code_challenge: Option<&'a str>,
    /// `code_challenge_method`: must be `S256`.
    pub code_challenge_method: Option<&'a str>,
    /// The browser-binding cookie, if the browser sent one.
    pub binding: Option<&'a str>,
}

/// A started flow: where the browser goes, and the binding cookie it must keep.
#[derive(Debug)]
pub struct Started {
    /// The provider's authorization URL.
    pub location: Url,
    /// The cookie's value: the browser's own if it sent a well-formed one (so that two tabs can
    /// sign in at once), else a new one.
    pub binding: SecretString,
    /// The cookie's lifetime: the flow's.
    pub max_age_secs: u64,
}

/// `/authorize`: checks the request, stores the flow and answers where the browser goes.
#[tracing::instrument(skip_all, fields(provider))]
pub async fn start(state: &AppState, request: &StartRequest<'_>) -> Result<Started, Refused> {
    let Some(registry) = state.oidc.as_deref() else {
        // Without providers there is no allow-list either: nowhere to send the browser.
        return Err(Refused::page(Reason::InvalidRedirect));
    };
    let providers = registry.providers();
    let back_to = request
        .redirect_to
        .and_then(|candidate| providers.redirect_target(candidate))
        // What the store keeps (MySQL's column is 2048 bytes): longer is no app's address.
        .filter(|url| url.as_str().len() <= MAX_REDIRECT_TO_LEN)
        .ok_or_else(|| Refused::page(Reason::InvalidRedirect))?;
    let refuse = |reason| Refused::back(reason, &back_to);
    let provider = request
        .provider
        .and_then(|name| providers.get(name))
        .ok_or_else(|| refuse(Reason::UnknownProvider))?;
    tracing::Span::current().record("provider", provider.name.as_str());
    let client_challenge = match (request.code_challenge, request.code_challenge_method) {
        (Some(challenge), Some("S256")) if pkce::is_valid_s256_challenge(challenge) => challenge,
        _ => return Err(refuse(Reason::InvalidCodeChallenge)),
    };
    let metadata = metadata(registry, provider).await.map_err(refuse)?;
    let secrets = FlowSecrets::generate();
    // Only a value that could be ours is reused: 32 bytes, base64url.
    let binding = match request.binding {
        Some(binding) if pkce::is_valid_s256_challenge(binding) => {
            SecretString::from(binding.to_owned())
        }
        _ => pkce::random_secret(),
    };
    let state_hash = pkce::sha256(secrets.state.expose_secret());
    let now = state.clock.now();
    let ttl = providers.flow_ttl().as_secs();
    let pkce_verifier = state
        .ring
        .keks()
        .seal_pkce_verifier(&state_hash, secrets.pkce_verifier.expose_secret())
        .map_err(|e| internal(&back_to, &e))?;
    let flow = SignInFlow {
        state_hash: state_hash.to_vec(),
        provider: provider.name.clone(),
        nonce: secrets.nonce.expose_secret().to_owned(),
        pkce_verifier,
        browser_binding_hash: pkce::sha256(binding.expose_secret()).to_vec(),
        redirect_to: back_to.to_string(),
        client_code_challenge: client_challenge.to_owned(),
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
    };
    state
        .store
        .insert_sign_in_flow(&flow)
        .await
        .map_err(|e| store_refusal(&back_to, e))?;
    let location = AuthorizationRequest {
        endpoint: &metadata.authorization_endpoint,
        client_id: &provider.client_id,
        redirect_uri: providers.callback_url().as_str(),
        scopes: &provider.scopes,
        state: secrets.state.expose_secret(),
        nonce: provider.is_oidc().then(|| secrets.nonce.expose_secret()),
        code_challenge: &secrets.code_challenge(),
        hosted_domain: provider.hosted_domain.as_deref(),
    }
    .url();
    tracing::info!(event = "external_sign_in_started", "sent to the provider");
    Ok(Started {
        location,
        binding,
        max_age_secs: ttl,
    })
}

/// What the provider sent to `/callback`.
#[derive(Debug, Default)]
pub struct Callback<'a> {
    /// `state`.
    pub state: Option<&'a str>,
    /// `code`, on success.
    pub code: Option<&'a str>,
    /// `error`, on failure.
    pub error: Option<&'a str>,
    /// `iss` (RFC 9207).
    pub iss: Option<&'a str>,
    /// The browser-binding cookie, if the browser sent one.
    pub binding: Option<&'a str>,
}

/// `/callback`: finishes the flow and answers where the browser goes: the app's `redirect_to`
/// with a one-time `code`.
#[tracing::instrument(skip_all, fields(provider, user_id))]
pub async fn finish(state: &AppState, callback: &Callback<'_>) -> Result<Url, Refused> {
    let outcome = take_and_finish(state, callback).await;
    match &outcome {
        Ok(_) => state.metrics.external_sign_in("success"),
        Err(refused) => {
            state.metrics.external_sign_in(refused.reason.code());
            tracing::info!(
                event = "external_sign_in_failed",
                reason = refused.reason.code(),
                provider_error = refused.provider_error.as_deref(),
                "external sign-in refused"
            );
        }
    }
    outcome
}

/// [`finish`] without its count and log line.
async fn take_and_finish(state: &AppState, callback: &Callback<'_>) -> Result<Url, Refused> {
    let now = state.clock.now();
    let presented = callback
        .state
        .filter(|value| is_our_secret(value))
        .ok_or_else(|| Refused::page(Reason::InvalidState))?;
    let flow = state
        .store
        .take_sign_in_flow(&pkce::sha256(presented), now)
        .await
        .map_err(|e| Refused::page(store_reason(e)))?
        .ok_or_else(|| Refused::page(Reason::InvalidState))?;
    // Checked against the allow-list when the flow started; parsed again only because the
    // store keeps text.
    let back_to = Url::parse(&flow.redirect_to).map_err(|_| Refused::page(Reason::Internal))?;
    tracing::Span::current().record("provider", flow.provider.as_str());
    finish_flow(state, &flow, callback, &back_to, now).await
}

/// [`finish`] once the flow is taken: every refusal goes back to the app.
async fn finish_flow(
    state: &AppState,
    flow: &SignInFlow,
    callback: &Callback<'_>,
    back_to: &Url,
    now: i64,
) -> Result<Url, Refused> {
    let refuse = |reason| Refused::back(reason, back_to);
    let same_browser = callback.binding.is_some_and(|binding| {
        bool::from(pkce::sha256(binding).ct_eq(flow.browser_binding_hash.as_slice()))
    });
    if !same_browser {
        return Err(refuse(Reason::BrowserMismatch));
    }
    let registry = state
        .oidc
        .as_deref()
        .ok_or_else(|| refuse(Reason::UnknownProvider))?;
    let provider = registry
        .providers()
        .get(&flow.provider)
        .ok_or_else(|| refuse(Reason::UnknownProvider))?;
    let metadata = metadata(registry, provider).await.map_err(refuse)?;
    // RFC 9207 §2.4: before anything else of the response is used, errors included.
    check_response_issuer(&metadata, callback.iss).map_err(|_| refuse(Reason::IssuerMismatch))?;
    if let Some(error) = callback.error {
        return Err(Refused {
            provider_error: Some(rfc6749_chars(error)),
            ..refuse(Reason::ProviderError)
        });
    }
    let code = callback
        .code
        .filter(|code| !code.is_empty() && code.len() <= 2048)
        .ok_or_else(|| refuse(Reason::ProviderInvalidResponse))?;
    let verifier = state
        .ring
        .keks()
        .open_pkce_verifier(&flow.state_hash, &flow.pkce_verifier)
        .map_err(|e| internal(back_to, &e))?;
    let verifier = SecretString::from(
        String::from_utf8(verifier.to_vec()).map_err(|e| internal(back_to, &e))?,
    );
    let identity = identify(
        registry,
        provider,
        &metadata,
        &SecretString::from(code.to_owned()),
        &verifier,
        &flow.nonce,
        now,
    )
    .await
    .map_err(|e| {
        let reason = provider_reason(&e);
        tracing::info!(error = %e, "external sign-in: provider step failed");
        match e {
            oidc::Error::TokenRefused { error } => Refused {
                provider_error: Some(error),
                ..refuse(reason)
            },
            _ => refuse(reason),
        }
    })?;
    let user = account_for(
        state,
        provider,
        &identity_issuer(provider, &metadata),
        identity,
        now,
    )
    .await
    .map_err(refuse)?;
    tracing::Span::current().record("user_id", user.id.as_str());
    if user.disabled_at.is_some() {
        return Err(refuse(Reason::AccountDisabled));
    }
    let code = pkce::random_secret();
    let one_time = SignInCode {
        code_hash: pkce::sha256(code.expose_secret()).to_vec(),
        user_id: user.id.clone(),
        provider: provider.name.clone(),
        amr: AuthMethod::External.as_str().to_owned(),
        code_challenge: flow.client_code_challenge.clone(),
        created_at: now,
        expires_at: now.saturating_add(CODE_TTL_SECS),
    };
    state
        .store
        .insert_sign_in_code(&one_time)
        .await
        .map_err(|e| store_refusal(back_to, e))?;
    tracing::info!(event = "external_sign_in", "signed in through the provider");
    Ok(with_params(back_to, &[("code", code.expose_secret())]))
}

/// Exchanges the provider's code and reads who signed in: the verified ID token (and userinfo
/// when the token does not vouch for an email), or GitHub's user and emails APIs.
async fn identify(
    registry: &Registry,
    provider: &Provider,
    metadata: &ProviderMetadata,
    code: &SecretString,
    verifier: &SecretString,
    nonce: &str,
    now: i64,
) -> oidc::Result<oidc::ExternalIdentity> {
    let http = registry.http();
    let tokens = exchange_code(
        http,
        &CodeExchange {
            token_endpoint: &metadata.token_endpoint,
            client_id: &provider.client_id,
            client_secret: &provider.client_secret,
            code,
            redirect_uri: registry.providers().callback_url().as_str(),
            code_verifier: verifier,
        },
    )
    .await?;
    if provider.kind == ProviderKind::Github {
        let (Some(user), Some(emails)) = (&metadata.userinfo_endpoint, &metadata.emails_endpoint)
        else {
            return Err(oidc::Error::Config(
                "GitHub endpoints are missing".to_owned(),
            ));
        };
        return github_identity(http, user, emails, &tokens.access_token).await;
    }
    let issuer = provider.issuer().unwrap_or_default();
    let id_token = tokens
        .id_token
        .as_ref()
        .ok_or_else(|| oidc::Error::invalid("token response", "no id_token"))?;
    let jwks = registry
        .jwks(&provider.name)
        .await
        .ok_or_else(|| oidc::Error::Config("the provider is gone".to_owned()))??;
    let expected = Expected {
        issuer,
        client_id: &provider.client_id,
        nonce,
        hosted_domain: provider.hosted_domain.as_deref(),
    };
    let identity = jwks
        .verify(http, id_token.expose_secret(), &expected, now)
        .await?;
    match &metadata.userinfo_endpoint {
        // OIDC Core §5.4: the ID token may leave the email to userinfo.
        Some(endpoint) if !identity.email_verified => {
            userinfo(http, endpoint, &tokens.access_token, &identity.subject).await
        }
        _ => Ok(identity),
    }
}

/// The account `identity` signs in as, created or linked as the module documentation says.
/// `issuer` is where the provider's identities are made now (its issuer; GitHub's origin).
async fn account_for(
    state: &AppState,
    provider: &Provider,
    issuer: &str,
    identity: oidc::ExternalIdentity,
    now: i64,
) -> Result<UserRow, Reason> {
    let store = &state.store;
    // What the provider asserts, as we store it: a parsed (canonical, bounded) address or
    // none, verified only if it parsed. An address that does not parse is never stored.
    let email = identity
        .email
        .as_deref()
        .and_then(|raw| Email::parse(raw).ok());
    let verified = email.is_some() && identity.email_verified;
    let row = |user_id: &str| ExternalIdentity {
        provider: provider.name.clone(),
        subject: identity.subject.clone(),
        issuer: Some(issuer.to_owned()),
        user_id: user_id.to_owned(),
        email: email.as_ref().map(|e| e.as_str().to_owned()),
        email_verified: verified,
        created_at: now,
        last_used_at: now,
    };
    // Three rounds at most: a concurrent first sign-in of the same identity, or of another
    // identity with the same email, may write between our read and our write; the next round
    // then finds what it wrote.
    for _ in 0..3 {
        if let Some(known) = store
            .identity(&provider.name, &identity.subject)
            .await
            .map_err(store_reason)?
        {
            if known
                .issuer
                .as_deref()
                .is_some_and(|made_at| made_at != issuer)
            {
                tracing::warn!(
                    event = "external_identity_of_another_issuer",
                    user_id = %known.user_id,
                    "the provider's name now points at another issuer than this identity's: \
                     refused (unlink it with `auth-api users unlink` if the move is intended)"
                );
                return Err(Reason::ProviderChanged);
            }
            if !store
                .touch_identity(&row(&known.user_id), now)
                .await
                .map_err(store_reason)?
            {
                // Unlinked meanwhile: as if it had never been found.
                continue;
            }
            return store
                .user_by_id(&known.user_id)
                .await
                .map_err(store_reason)?
                .ok_or(Reason::Internal);
        }
        let email = email.as_ref().ok_or(Reason::EmailRequired)?;
        // Before anything is looked up by it: an unverified address must not tell whether an
        // account has it.
        if !verified {
            return Err(Reason::EmailNotVerified);
        }
        if let Some(existing) = store
            .user_by_email(email.as_str())
            .await
            .map_err(store_reason)?
        {
            link_to(state, provider, &identity, &existing, &row(&existing.id)).await?;
            return Ok(existing);
        }
        let user_id = uuid::Uuid::new_v4().to_string();
        match store
            .insert_passwordless_user(email.as_str(), &DEFAULT_ROLES, &row(&user_id))
            .await
            .map_err(store_reason)?
        {
            InsertPasswordlessUser::Created => {
                tracing::info!(
                    event = "signup",
                    %user_id,
                    method = AuthMethod::External.as_str(),
                    "account created by an external sign-in"
                );
                state.metrics.signup("created");
                return store
                    .user_by_id(&user_id)
                    .await
                    .map_err(store_reason)?
                    .ok_or(Reason::Internal);
            }
            // Another sign-in or a signup took the email meanwhile: the next round sees the
            // account and decides as for any existing one.
            InsertPasswordlessUser::EmailTaken | InsertPasswordlessUser::IdentityTaken => {}
        }
    }
    Err(Reason::Internal)
}

/// Links `identity` (as `row`) to the `existing` account with its verified email, where that
/// is safe: the provider allows it, the account is enabled, the address is the same text (not
/// only the same canonical form, which folds compatibility characters) and the account has no
/// password. An account with a password may have been opened by anyone who typed the address
/// (signup verifies no email): linking would let that person keep a way into the account the
/// provider's user now signs in to (account pre-hijacking). Such an account is `email_in_use`.
async fn link_to(
    state: &AppState,
    provider: &Provider,
    identity: &oidc::ExternalIdentity,
    existing: &UserRow,
    row: &ExternalIdentity,
) -> Result<(), Reason> {
    let same_text = identity
        .email
        .as_deref()
        .is_some_and(|raw| raw.trim().eq_ignore_ascii_case(&existing.email));
    if !(provider.allow_email_linking && same_text && !existing.has_password()) {
        return Err(Reason::EmailInUse);
    }
    // Nothing is linked to an account an operator disabled.
    if existing.disabled_at.is_some() {
        return Err(Reason::AccountDisabled);
    }
    let inserted = state
        .store
        .insert_identity(row)
        .await
        .map_err(store_reason)?;
    match inserted {
        InsertIdentity::Created => {
            tracing::info!(
                event = "external_identity_linked",
                user_id = %existing.id,
                "identity linked to the passwordless account with its verified email"
            );
            Ok(())
        }
        // A concurrent sign-in of this identity linked it first: to this account, since the
        // email decided; anything else is refused rather than guessed.
        InsertIdentity::AlreadyLinked => Err(Reason::EmailInUse),
    }
}

/// `/token?grant_type=pkce`: the one-time code and the verifier of the app's challenge for an
/// ordinary session. The code is spent whatever the answer; a wrong or unknown one is
/// [`Error::InvalidGrant`].
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn exchange(state: &AppState, code: &str, verifier: &str) -> Result<TokenPair> {
    let now = state.clock.now();
    if !is_our_secret(code) {
        return Err(Error::InvalidGrant);
    }
    let Some(taken) = state
        .store
        .take_sign_in_code(&pkce::sha256(code), now)
        .await?
    else {
        return Err(Error::InvalidGrant);
    };
    if !pkce::verify_s256(verifier, &taken.code_challenge) {
        tracing::info!(event = "sign_in_code_refused", "wrong PKCE verifier");
        return Err(Error::InvalidGrant);
    }
    let method = AuthMethod::from_stored(&taken.amr).ok_or_else(|| {
        Error::Internal(anyhow::anyhow!(
            "a sign-in code has an unknown method {:?}",
            taken.amr
        ))
    })?;
    let user = state
        .store
        .user_by_id(&taken.user_id)
        .await?
        .ok_or(Error::InvalidGrant)?;
    tracing::Span::current().record("user_id", user.id.as_str());
    if user.disabled_at.is_some() {
        return Err(Error::AccountDisabled);
    }
    let Some(opened) = sessions::open(state, &user, method, now).await? else {
        // Disabled, or its password changed, since the read above: the first is answered as
        // such, the second as a code that no longer works.
        let disabled = state
            .store
            .user_by_id(&user.id)
            .await?
            .is_none_or(|now| now.disabled_at.is_some());
        return Err(if disabled {
            Error::AccountDisabled
        } else {
            Error::InvalidGrant
        });
    };
    let session_id = opened.session_id.clone();
    let (tokens, _) = opened.issue(state, user, now).await?;
    state.metrics.login("success");
    tracing::info!(
        event = "login",
        session_id = %session_id,
        provider = %taken.provider,
        method = method.as_str(),
        "session opened"
    );
    Ok(tokens)
}

/// The provider's metadata, discovered on first use.
async fn metadata(
    registry: &Registry,
    provider: &Provider,
) -> Result<std::sync::Arc<ProviderMetadata>, Reason> {
    match registry.metadata(&provider.name).await {
        Some(Ok(metadata)) => Ok(metadata),
        Some(Err(e)) => {
            tracing::warn!(provider = %provider.name, error = %e, "provider discovery failed");
            Err(provider_reason(&e))
        }
        None => Err(Reason::UnknownProvider),
    }
}

/// Where `provider`'s identities are made: its issuer, or for GitHub (plain OAuth, no issuer)
/// the origin of its token endpoint.
fn identity_issuer(provider: &Provider, metadata: &ProviderMetadata) -> String {
    match provider.issuer() {
        Some(issuer) => issuer.to_owned(),
        None => metadata.token_endpoint.origin().ascii_serialization(),
    }
}

/// How a provider-side failure is answered.
fn provider_reason(error: &oidc::Error) -> Reason {
    match error {
        oidc::Error::Unavailable { .. } => Reason::ProviderUnavailable,
        oidc::Error::TokenRefused { .. } => Reason::ProviderError,
        oidc::Error::ResponseIssuer => Reason::IssuerMismatch,
        oidc::Error::InvalidIdToken(oidc::IdTokenError::HostedDomain) => Reason::HostedDomain,
        oidc::Error::InvalidIdToken(_) => Reason::InvalidIdToken,
        oidc::Error::InvalidResponse { .. } => Reason::ProviderInvalidResponse,
        _ => Reason::Internal,
    }
}

/// A store failure while the app is known.
fn store_refusal(back_to: &Url, error: sqlx::Error) -> Refused {
    Refused::back(store_reason(error), back_to)
}

/// How a store failure is answered (and logged): unavailable when retrying may work.
fn store_reason(error: sqlx::Error) -> Reason {
    tracing::warn!(error = %error, "external sign-in: store error");
    if super::is_unavailable(&error) {
        Reason::Unavailable
    } else {
        Reason::Internal
    }
}

/// Any other fault while the app is known; logged, never shown.
fn internal(back_to: &Url, error: &dyn std::fmt::Display) -> Refused {
    tracing::error!(error = %error, "external sign-in failed");
    Refused::back(Reason::Internal, back_to)
}

/// Whether `value` can be one of our random values (a state, a binding, a code): short, of
/// base64url characters. Anything else is refused before it is hashed or looked up.
fn is_our_secret(value: &str) -> bool {
    (1..=MAX_SECRET_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A provider's `error` reduced to the characters of the registered error codes
/// (`[A-Za-z0-9_.-]`), at most 64, for the app's `error_description` and the log: nothing a
/// page that shows it could mistake for markup.
fn rfc6749_chars(error: &str) -> String {
    error
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_distinct_code_and_an_rfc6749_error() {
        let all = [
            Reason::InvalidRedirect,
            Reason::InvalidState,
            Reason::UnknownProvider,
            Reason::InvalidCodeChallenge,
            Reason::BrowserMismatch,
            Reason::ProviderError,
            Reason::IssuerMismatch,
            Reason::ProviderUnavailable,
            Reason::ProviderInvalidResponse,
            Reason::InvalidIdToken,
            Reason::EmailRequired,
            Reason::EmailNotVerified,
            Reason::EmailInUse,
            Reason::AccountDisabled,
            Reason::ProviderChanged,
            Reason::HostedDomain,
            Reason::Unavailable,
            Reason::Internal,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        for reason in all {
            assert!(matches!(
                reason.oauth_error(),
                "invalid_request" | "access_denied" | "temporarily_unavailable" | "server_error"
            ));
        }
    }

    #[test]
    fn refusals_go_back_with_the_apps_query_kept() {
        let back = Url::parse("https://app.example/done?tab=2").unwrap();
        let refused = Refused {
            provider_error: Some(rfc6749_chars("access_denied\"<x>\\")),
            ..Refused::back(Reason::ProviderError, &back)
        };
        let location = refused.location().unwrap();
        let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("tab".to_owned(), "2".to_owned()));
        assert_eq!(pairs[1], ("error".to_owned(), "access_denied".to_owned()));
        assert_eq!(
            pairs[2],
            ("error_code".to_owned(), "provider_error".to_owned())
        );
        assert!(pairs[3].1.ends_with("(access_deniedx)"), "{:?}", pairs[3]);
        assert!(Refused::page(Reason::InvalidState).location().is_none());
    }

    #[test]
    fn parameters_of_ours_already_in_redirect_to_are_replaced() {
        let back = Url::parse("https://app.example/done?code=theirs&x=1&error=e").unwrap();
        let url = with_params(&back, &[("code", "ours")]);
        assert_eq!(url.as_str(), "https://app.example/done?x=1&code=ours");
        let plain = Url::parse("https://app.example/done").unwrap();
        assert_eq!(
            with_params(&plain, &[("code", "c")]).as_str(),
            "https://app.example/done?code=c"
        );
    }

    #[test]
    fn only_short_base64url_values_are_looked_up() {
        assert!(is_our_secret(&"a".repeat(43)));
        assert!(is_our_secret("A-z_09"));
        for bad in ["", "a b", "a+b", "a/b", "é", "a=", &"a".repeat(129)] {
            assert!(!is_our_secret(bad), "{bad:?}");
        }
    }
}
