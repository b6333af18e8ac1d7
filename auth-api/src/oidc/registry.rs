//! [`Registry`]: the configured providers with, per provider, its metadata (discovered once, on
//! first use) and its [`Jwks`] cache, and the one [`HttpClient`] they share. What the routes
//! will hold in the application state.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::oidc::discovery::ProviderMetadata;
use crate::oidc::id_token::Jwks;
use crate::oidc::providers::{Provider, Providers};
use crate::oidc::{Error, HttpClient, Result};

/// The providers and their lazily discovered endpoints and keys. A failed discovery is not
/// remembered: the next sign-in tries again.
#[derive(Debug)]
pub struct Registry {
    providers: Providers,
    http: HttpClient,
    runtimes: Vec<Runtime>,
}

#[derive(Debug, Default)]
struct Runtime {
    metadata: OnceCell<Arc<ProviderMetadata>>,
    jwks: OnceCell<Arc<Jwks>>,
}

impl Registry {
    /// A registry of `providers` fetching with `http`.
    pub fn new(providers: Providers, http: HttpClient) -> Self {
        let runtimes = providers.iter().map(|_| Runtime::default()).collect();
        Self {
            providers,
            http,
            runtimes,
        }
    }

    /// The configuration.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// The shared client.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The provider called `name` with its runtime.
    fn entry(&self, name: &str) -> Option<(&Provider, &Runtime)> {
        self.providers
            .iter()
            .zip(&self.runtimes)
            .find(|(provider, _)| provider.name == name)
    }

    /// The metadata of provider `name` (`None` if there is no such provider), discovered on
    /// first use.
    pub async fn metadata(&self, name: &str) -> Option<Result<Arc<ProviderMetadata>>> {
        let (provider, runtime) = self.entry(name)?;
        Some(
            runtime
                .metadata
                .get_or_try_init(|| async {
                    ProviderMetadata::for_provider(&self.http, provider)
                        .await
                        .map(Arc::new)
                })
                .await
                .cloned(),
        )
    }

    /// The JWKS cache of OIDC provider `name` (`None` if there is no such provider); an
    /// [`Error::Config`] for a provider without ID tokens (GitHub).
    pub async fn jwks(&self, name: &str) -> Option<Result<Arc<Jwks>>> {
        let metadata = match self.metadata(name).await? {
            Ok(metadata) => metadata,
            Err(err) => return Some(Err(err)),
        };
        let (_, runtime) = self.entry(name)?;
        let Some(uri) = metadata.jwks_uri.clone() else {
            return Some(Err(Error::Config(format!(
                "provider `{name}` issues no ID tokens"
            ))));
        };
        Some(Ok(Arc::clone(
            runtime
                .jwks
                .get_or_init(|| async { Arc::new(Jwks::new(uri)) })
                .await,
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
    use serde_json::{json, Value};

    use super::*;

    /// A provider whose discovery fails `failures` times, then answers; counts the hits.
    async fn provider(failures: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let doc = json!({
            "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"], "id_token_signing_alg_values_supported": ["RS256"]
        });
        let handler = move |State((hits, doc)): State<(Arc<AtomicUsize>, Value)>| async move {
            if hits.fetch_add(1, Ordering::SeqCst) < failures {
                Err(StatusCode::SERVICE_UNAVAILABLE)
            } else {
                Ok(Json(doc))
            }
        };
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(handler))
            .with_state((Arc::clone(&hits), doc));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (issuer, hits)
    }

    fn registry(issuer: &str) -> Registry {
        let document = json!({
            "providers": [
                { "name": "local", "kind": "oidc", "issuer": issuer, "client_id": "c", "client_secret": "s" },
                { "name": "github", "kind": "github", "client_id": "c", "client_secret": "s" }
            ],
            "redirect_allow_list": ["https://app.example/done"],
            "callback_url": "https://api.example/callback"
        });
        let providers = Providers::from_json_with_env(&document.to_string(), &|_| None).unwrap();
        Registry::new(providers, HttpClient::new().unwrap())
    }

    #[tokio::test]
    async fn metadata_is_discovered_once_and_failures_are_retried() {
        let (issuer, hits) = provider(1).await;
        let registry = registry(&issuer);
        let err = registry.metadata("local").await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        for _ in 0..3 {
            let metadata = registry.metadata("local").await.unwrap().unwrap();
            assert_eq!(metadata.issuer.as_deref(), Some(issuer.as_str()));
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "one failure, then one success kept"
        );
        let jwks = registry.jwks("local").await.unwrap().unwrap();
        assert!(Arc::ptr_eq(
            &jwks,
            &registry.jwks("local").await.unwrap().unwrap()
        ));
    }

    #[tokio::test]
    async fn unknown_provider_is_none_and_github_has_no_jwks() {
        let (issuer, hits) = provider(0).await;
        let registry = registry(&issuer);
        assert!(registry.metadata("nope").await.is_none());
        assert!(registry.jwks("nope").await.is_none());
        let github = registry.metadata("github").await.unwrap().unwrap();
        assert_eq!(
            github.token_endpoint.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        assert!(matches!(
            registry.jwks("github").await.unwrap(),
            Err(Error::Config(_))
        ));
        assert_eq!(hits.load(Ordering::SeqCst), 0, "github needs no discovery");
    }
}
