//! The Admin API, `/admin/v1/…` on the internal listener behind `AUTH_ADMIN_TOKEN`: what
//! `auth-api users …` and `auth-api keys …` do, over HTTP. Each handler is an adapter of
//! [`service::admin`], which the CLI calls too; the audit events are written there, with the
//! actor `admin-token`.
//!
//! Users are named by id in paths (an email in a path would reach access logs); `GET
//! /admin/v1/users?email=` finds one by email. The API's own OpenAPI document is
//! [`AdminDoc`], served at `GET /admin/v1/openapi.json` behind the same token.

use axum::{
    extract::{FromRequestParts, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse as _, Response},
    routing::{delete, get, post, put},
    Router,
};
use serde::{Deserialize, Serialize};
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, Ref, ResponseBuilder,
    },
    IntoParams, Modify, OpenApi, ToSchema,
};

use super::rfc3339;
use crate::{
    error::{ApiError, ErrorBody, Result},
    extract::OptionalJson,
    service::{
        self,
        admin::{Actor, Admin, Hs256, KeyDetails, DEFAULT_PAGE, MAX_PAGE, MAX_STORED_ROLE},
    },
    state::AppState,
    store::{SessionSummary, UserSummary},
};

/// The Admin API's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "auth-api Admin API",
        description = "Operator actions on users, sessions and signing keys, on the internal listener (AUTH_INTERNAL_LISTEN). Every call needs `Authorization: Bearer <AUTH_ADMIN_TOKEN>` (not the gateway's AUTH_INTERNAL_TOKEN, which reads only the keys and the revocation feed); every change is an audit event `admin_…` with the actor `admin-token`. The CLI (`auth-api users …`, `auth-api keys …`) does the same through the same code."
    ),
    paths(
        list_users,
        get_user,
        disable_user,
        enable_user,
        grant_role,
        revoke_role,
        unlock_user,
        verify_email,
        logout_user,
        user_sessions,
        end_session,
        list_keys,
        rotate_key,
        revoke_key,
        admin_openapi_json,
    ),
    components(schemas(ErrorBody, AdminUser, UserList, AdminSession, SessionList, AdminKey, KeyList, RotateRequest, RevokedKeyResponse)),
    modifiers(&AdminTokenScheme),
    security(("admin_token" = [])),
)]
pub struct AdminDoc;

#[derive(Debug)]
struct AdminTokenScheme;

impl Modify for AdminTokenScheme {
    /// The scheme, and its 401 on every operation (the router's token layer answers it).
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("AUTH_ADMIN_TOKEN"))
                    .build(),
            ),
        );
        let error_answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let unauthorized = error_answer("missing_token or invalid_token: no or wrong admin token");
        // Axum's path extractor answers it before any handler runs.
        let bad_path =
            error_answer("invalid_request: a path segment that is not UTF-8 once percent-decoded");
        for (path, item) in &mut openapi.paths.paths {
            let has_path_params = path.contains('{');
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut operation.responses.responses;
                responses.insert("401".to_owned(), unauthorized.clone().into());
                if has_path_params {
                    responses
                        .entry("400".to_owned())
                        .or_insert_with(|| bad_path.clone().into());
                }
            }
        }
    }
}

/// Path parameters whose rejection (a segment that is not UTF-8) is our `invalid_request`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub(super) struct AdminPath<T>(T);

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::InvalidRequest(rejection.body_text())
    }
}

/// `{id}`: a user.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct UserPath {
    /// The user's id (a UUID, the tokens' `sub`); anything else is 404 `user_not_found`.
    #[param(format = "uuid")]
    id: String,
}

/// `{id}/roles/{role}`, to grant.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct RolePath {
    /// The user's id (a UUID); anything else is 404 `user_not_found`.
    #[param(format = "uuid")]
    id: String,
    /// 1-64 letters, digits, `_ - . :`.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,64}$")]
    role: String,
}

/// `{id}/roles/{role}`, to revoke.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct RevokeRolePath {
    /// The user's id (a UUID); anything else is 404 `user_not_found`.
    #[param(format = "uuid")]
    id: String,
    /// Any role the user holds, also one granted before the naming rule (1-255 bytes).
    #[param(min_length = 1, max_length = 255)]
    role: String,
}

/// `{id}`: a session.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct SessionPath {
    /// The session's id (a UUID, the tokens' `sid`); anything else is 404 `session_not_found`.
    #[param(format = "uuid")]
    id: String,
}

/// `{kid}`: a signing key.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct KeyPath {
    /// The key's id, as in the tokens' header.
    kid: String,
}

/// A user as the Admin API shows it. Times are RFC 3339, UTC.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AdminUser {
    /// The user's id (UUID), as in the tokens' `sub`.
    id: String,
    /// The normalised email.
    email: String,
    created_at: String,
    /// Whether login is refused.
    disabled: bool,
    disabled_at: Option<String>,
    /// Whether the email was proved (by link, by a provider, or by an operator).
    email_verified: bool,
    email_verified_at: Option<String>,
    /// Sorted role names.
    roles: Vec<String>,
}

impl TryFrom<UserSummary> for AdminUser {
    type Error = ApiError;

    fn try_from(user: UserSummary) -> Result<Self> {
        Ok(Self {
            created_at: rfc3339(user.created_at)?,
            disabled: user.disabled_at.is_some(),
            disabled_at: user.disabled_at.map(rfc3339).transpose()?,
            email_verified: user.email_verified_at.is_some(),
            email_verified_at: user.email_verified_at.map(rfc3339).transpose()?,
            id: user.id,
            email: user.email,
            roles: user.roles,
        })
    }
}

/// A page of users, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserList {
    users: Vec<AdminUser>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
}

/// A live session.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AdminSession {
    /// The session id, as in the tokens' `sid`.
    id: String,
    /// Opened (the login).
    created_at: String,
    /// Its refresh token last rotated.
    refreshed_at: String,
    /// Its absolute end.
    expires_at: String,
}

impl TryFrom<SessionSummary> for AdminSession {
    type Error = ApiError;

    fn try_from(session: SessionSummary) -> Result<Self> {
        Ok(Self {
            created_at: rfc3339(session.created_at)?,
            refreshed_at: rfc3339(session.refreshed_at)?,
            expires_at: rfc3339(session.expires_at)?,
            id: session.id,
        })
    }
}

/// A user's live sessions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionList {
    sessions: Vec<AdminSession>,
}

/// A signing key (never its material).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AdminKey {
    kid: String,
    /// `ES256`, `EdDSA`, `RS256` or `HS256`.
    alg: String,
    /// `pending`, `active`, `retired`, `expired` or `revoked`.
    state: String,
    /// Whether this key signs now.
    signing: bool,
    created_at: String,
    /// Signs from this time (published from creation).
    activates_at: String,
    /// Stops signing at this time.
    retires_at: Option<String>,
    revoked_at: Option<String>,
    /// The key-encryption key sealing it; `null` in the clear.
    kek_id: Option<String>,
}

impl TryFrom<KeyDetails> for AdminKey {
    type Error = ApiError;

    fn try_from(key: KeyDetails) -> Result<Self> {
        Ok(Self {
            created_at: rfc3339(key.created_at)?,
            activates_at: rfc3339(key.activates_at)?,
            retires_at: key.retires_at.map(rfc3339).transpose()?,
            revoked_at: key.revoked_at.map(rfc3339).transpose()?,
            kid: key.kid,
            alg: key.alg,
            state: key.state,
            signing: key.signing,
            kek_id: key.kek_id,
        })
    }
}

/// Every key of the ring.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KeyList {
    keys: Vec<AdminKey>,
}

/// `{"alg"?}`: the new key's algorithm, default `AUTH_SIGNING_ALG`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateRequest {
    /// `ES256`, `EdDSA`, `RS256` or `HS256`.
    alg: Option<String>,
}

/// The outcome of a key revocation.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RevokedKeyResponse {
    kid: String,
    /// `false` when the key was revoked already (nothing changed).
    revoked: bool,
    /// The key this call made the signer, because none signed any more.
    replacement: Option<String>,
}

/// `?limit&after` (a page) or `?email` (a look-up).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Users per page, 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next` of the previous page (a user id). Keyset paging on (creation time, id):
    /// stable under disables, role changes and new users created after the walk's current
    /// page, but a user created during the walk in the same second as a page's last user and
    /// with a smaller id (ids are random) falls before the cursor and is not listed by that
    /// walk (nor is one whose replica's clock lagged the cursor's); walk again to catch those.
    #[param(format = "uuid")]
    after: Option<String>,
    /// Find the user with this email (case-insensitive, trimmed): a list of zero or one user.
    email: Option<String>,
}

fn admin(state: &AppState) -> Admin<'_> {
    Admin::of(state, Actor::AdminToken)
}

/// 200 with the user `id` as it is now.
async fn user_reply(admin: &Admin<'_>, id: &str) -> Result<Response> {
    let user = AdminUser::try_from(admin.user(id).await?)?;
    Ok(axum::Json(user).into_response())
}

/// Lists users a page at a time, oldest first; or, with `email`, finds one.
#[utoipa::path(get, path = "/admin/v1/users", params(ListQuery), tag = "users", responses(
    (status = 200, description = "a page of users (with `email`: zero or one)", body = UserList),
    (status = 400, description = "invalid_request: limit not 1-500, after not a user id or naming no user, email with after or limit", body = ErrorBody),
    (status = 422, description = "invalid_email", body = ErrorBody),
))]
pub(super) async fn list_users(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<UserList>> {
    let Query(query) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let admin = admin(&state);
    let (users, next) = match (query.email, query.after, query.limit) {
        (Some(email), None, None) => match admin.user_by_email(&email).await {
            Ok(user) => (vec![user], None),
            Err(service::Error::UnknownUser) => (Vec::new(), None),
            Err(e) => return Err(e.into()),
        },
        (Some(_), _, _) => {
            return Err(ApiError::InvalidRequest(
                "email is a look-up: it takes neither after nor limit".to_owned(),
            ))
        }
        (None, after, limit) => {
            let page = admin
                .users(after.as_deref(), limit.unwrap_or(DEFAULT_PAGE))
                .await?;
            (page.users, page.next)
        }
    };
    Ok(axum::Json(UserList {
        users: users
            .into_iter()
            .map(AdminUser::try_from)
            .collect::<Result<_>>()?,
        next,
    }))
}

/// One user by id.
#[utoipa::path(get, path = "/admin/v1/users/{id}", params(UserPath), tag = "users", responses(
    (status = 200, description = "the user", body = AdminUser),
    (status = 404, description = "user_not_found", body = ErrorBody),
))]
pub(super) async fn get_user(
    State(state): State<AppState>,
    AdminPath(UserPath { id }): AdminPath<UserPath>,
) -> Result<Response> {
    user_reply(&admin(&state), &id).await
}

/// Disables a user: login refused, every session and access token revoked, at the gateway too
/// (revocation feed). Idempotent.
#[utoipa::path(post, path = "/admin/v1/users/{id}/disable", params(UserPath), tag = "users", responses(
    (status = 200, description = "the user, disabled", body = AdminUser),
    (status = 404, description = "user_not_found", body = ErrorBody),
))]
pub(super) async fn disable_user(
    State(state): State<AppState>,
    AdminPath(UserPath { id }): AdminPath<UserPath>,
) -> Result<Response> {
    let admin = admin(&state);
    admin.disable(&id).await?;
    user_reply(&admin, &id).await
}

/// Enables a disabled user (tokens revoked by the disable stay revoked). Idempotent.
#[utoipa::path(post, path = "/admin/v1/users/{id}/enable", params(UserPath), tag = "users", responses(
    (status = 200, description = "the user, enabled", body = AdminUser),
    (status = 404, description = "user_not_found", body = ErrorBody),
))]
pub(super) async fn enable_user(
    State(state): State<AppState>,
    AdminPath(UserPath { id }): AdminPath<UserPath>,
) -> Result<Response> {
    let admin = admin(&state);
    admin.enable(&id).await?;
    user_reply(&admin, &id).await
}

/// Gives a user a role, in the `roles` claim of the next token issued. Idempotent.
#[utoipa::path(put, path = "/admin/v1/users/{id}/roles/{role}", params(RolePath), tag = "users", responses(
    (status = 200, description = "the user, with the role", body = AdminUser),
    (status = 404, description = "user_not_found", body = ErrorBody),
    (status = 422, description = "invalid_role", body = ErrorBody),
))]
pub(super) async fn grant_role(
    State(state): State<AppState>,
    AdminPath(RolePath { id, role }): AdminPath<RolePath>,
) -> Result<Response> {
    let admin = admin(&state);
    admin.grant_role(&id, &role).await?;
    user_reply(&admin, &id).await
}

/// Takes a role from a user (tokens already issued keep it until they expire). Idempotent. Any
/// stored name can be taken, also one the grant's naming rule refuses (granted before it).
#[utoipa::path(delete, path = "/admin/v1/users/{id}/roles/{role}", params(RevokeRolePath), tag = "users", responses(
    (status = 200, description = "the user, without the role", body = AdminUser),
    (status = 404, description = "user_not_found", body = ErrorBody),
    (status = 422, description = "invalid_role: empty, over 255 bytes or holding a NUL", body = ErrorBody),
))]
pub(super) async fn revoke_role(
    State(state): State<AppState>,
    AdminPath(RevokeRolePath { id, role }): AdminPath<RevokeRolePath>,
) -> Result<Response> {
    let admin = admin(&state);
    admin.revoke_role(&id, &role).await?;
    user_reply(&admin, &id).await
}

/// Clears the user's failed logins and login lock (also after 100 failures in a row).
#[utoipa::path(post, path = "/admin/v1/users/{id}/unlock", params(UserPath), tag = "users", responses(
    (status = 200, description = "the user", body = AdminUser),
    (status = 404, description = "user_not_found", body = ErrorBody),
))]
pub(super) async fn unlock_user(
    State(state): State<AppState>,
    AdminPath(UserPath { id }): AdminPath<UserPath>,
) -> Result<Response> {
    let admin = admin(&state);
    admin.unlock(&id).await?;
    user_reply(&admin, &id).await
}

/// Marks the user's email verified, once confirmed some other way. Idempotent.
#[utoipa::path(post, path = "/admin/v1/users/{id}/verify-email", params(UserPath), tag = "users", responses(
    (status = 200, description = "the user, verified", body = AdminUser),
    (status = 404, description = "user_not_found", body = ErrorBody),
))]
pub(super) async fn verify_email(
    State(state): State<AppState>,
    AdminPath(UserPath { id }): AdminPath<UserPath>,
) -> Result<Response> {
    let admin = admin(&state);
    admin.verify_email(&id).await?;
    user_reply(&admin, &id).await
}

/// Logs a user out everywhere: every session and access token revoked, at the gateway too. The
/// user may log in again.
#[utoipa::path(post, path = "/admin/v1/users/{id}/logout", params(UserPath), tag = "sessions", responses(
    (status = 204, description = "every session ended"),
    (status = 404, description = "user_not_found", body = ErrorBody),
))]
pub(super) async fn logout_user(
    State(state): State<AppState>,
    AdminPath(UserPath { id }): AdminPath<UserPath>,
) -> Result<StatusCode> {
    admin(&state).logout(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's live sessions, newest first.
#[utoipa::path(get, path = "/admin/v1/users/{id}/sessions", params(UserPath), tag = "sessions", responses(
    (status = 200, description = "the live sessions", body = SessionList),
    (status = 404, description = "user_not_found", body = ErrorBody),
))]
pub(super) async fn user_sessions(
    State(state): State<AppState>,
    AdminPath(UserPath { id }): AdminPath<UserPath>,
) -> Result<axum::Json<SessionList>> {
    let sessions = admin(&state).sessions(&id).await?;
    Ok(axum::Json(SessionList {
        sessions: sessions
            .into_iter()
            .map(AdminSession::try_from)
            .collect::<Result<_>>()?,
    }))
}

/// Ends one session, at the gateway too. Idempotent: an ended session answers 204 again.
#[utoipa::path(delete, path = "/admin/v1/sessions/{id}", params(SessionPath), tag = "sessions", responses(
    (status = 204, description = "the session has ended"),
    (status = 404, description = "session_not_found", body = ErrorBody),
))]
pub(super) async fn end_session(
    State(state): State<AppState>,
    AdminPath(SessionPath { id }): AdminPath<SessionPath>,
) -> Result<StatusCode> {
    admin(&state).end_session(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every key of the signing ring with its state (never key material).
#[utoipa::path(get, path = "/admin/v1/keys", tag = "keys", responses(
    (status = 200, description = "the keys", body = KeyList),
))]
pub(super) async fn list_keys(State(state): State<AppState>) -> Result<axum::Json<KeyList>> {
    let keys = admin(&state).keys(&state.ring);
    Ok(axum::Json(KeyList {
        keys: keys
            .into_iter()
            .map(AdminKey::try_from)
            .collect::<Result<_>>()?,
    }))
}

/// Adds a signing key: published now (JWKS, `/internal/keys`), signing after
/// `AUTH_KEY_PUBLISH_DELAY_SECS`; the current signer retires then. HS256 only while
/// `AUTH_SIGNING_ALG=HS256` (the CLI's `keys rotate --alg HS256` warns instead).
#[utoipa::path(post, path = "/admin/v1/keys/rotate", request_body(content = Option<RotateRequest>, description = "empty for AUTH_SIGNING_ALG"), tag = "keys", responses(
    (status = 201, description = "the new key", body = AdminKey),
    (status = 400, description = "invalid_request: malformed JSON or an unknown field", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 422, description = "unsupported_alg: not ES256, EdDSA, RS256 or HS256; or HS256 while AUTH_SIGNING_ALG is not (gateways verifying with the public JWKS never see an HS256 key)", body = ErrorBody),
))]
pub(super) async fn rotate_key(
    State(state): State<AppState>,
    OptionalJson(body): OptionalJson<RotateRequest>,
) -> Result<Response> {
    let alg = body
        .alg
        .as_deref()
        .map(service::admin::parse_alg)
        .transpose()?;
    let admin = admin(&state);
    let rotated = admin.rotate_key(&state.ring, alg, Hs256::Refuse).await?;
    let key = admin
        .keys(&state.ring)
        .into_iter()
        .find(|k| k.kid == rotated.kid)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the new key is not in the ring")))?;
    Ok((StatusCode::CREATED, axum::Json(AdminKey::try_from(key)?)).into_response())
}

/// Revokes a key at once (compromise): unpublished, its tokens refused at `/validate` and, from
/// their next key poll, at the gateways; if no key signs any more, a new key signs at once.
/// Idempotent, also for concurrent calls; a repeat also makes a signer if an earlier call's
/// replacement failed.
#[utoipa::path(post, path = "/admin/v1/keys/{kid}/revoke", params(KeyPath), tag = "keys", responses(
    (status = 200, description = "revoked (or already revoked: `revoked` is false)", body = RevokedKeyResponse),
    (status = 404, description = "key_not_found", body = ErrorBody),
))]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    AdminPath(KeyPath { kid }): AdminPath<KeyPath>,
) -> Result<axum::Json<RevokedKeyResponse>> {
    let outcome = admin(&state).revoke_key(&state.ring, &kid).await?;
    Ok(axum::Json(RevokedKeyResponse {
        kid,
        revoked: outcome.revoked,
        replacement: outcome.replacement,
    }))
}

/// This document.
#[utoipa::path(get, path = "/admin/v1/openapi.json", tag = "meta", responses(
    (status = 200, description = "the Admin API's OpenAPI document"),
))]
pub(super) async fn admin_openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(AdminDoc::openapi())
}

// The documentation above states these numbers.
const _: () = assert!(MAX_PAGE == 500 && DEFAULT_PAGE == 50 && MAX_STORED_ROLE == 255);

/// The Admin API's routes, for the internal router (which puts them behind the token).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/users", get(list_users))
        .route("/admin/v1/users/{id}", get(get_user))
        .route("/admin/v1/users/{id}/disable", post(disable_user))
        .route("/admin/v1/users/{id}/enable", post(enable_user))
        .route(
            "/admin/v1/users/{id}/roles/{role}",
            put(grant_role).delete(revoke_role),
        )
        .route("/admin/v1/users/{id}/unlock", post(unlock_user))
        .route("/admin/v1/users/{id}/verify-email", post(verify_email))
        .route("/admin/v1/users/{id}/logout", post(logout_user))
        .route("/admin/v1/users/{id}/sessions", get(user_sessions))
        .route("/admin/v1/sessions/{id}", delete(end_session))
        .route("/admin/v1/keys", get(list_keys))
        .route("/admin/v1/keys/rotate", post(rotate_key))
        .route("/admin/v1/keys/{kid}/revoke", post(revoke_key))
        .route("/admin/v1/openapi.json", get(admin_openapi_json))
}
