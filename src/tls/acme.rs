//! ACME (RFC 8555) client side with instant-acme: the account (created once, credentials
//! persisted 0600 per directory), an HTTP client trusting the web PKI plus an optional extra
//! CA bundle, and one HTTP-01 order per certificate whose key authorizations are published in
//! the shared challenge map the proxy answers from on :80.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::certs::{key_and_csr, provider};
use super::error::{describe_acme_error, describe_problem, TlsError};
use super::settings::AcmeSettings;
use super::store::{read_optional, write_atomic, CertStore};

/// token → key authorization, read by `TlsHooks::challenge_response`.
pub(crate) type Challenges = Arc<Mutex<HashMap<String, String>>>;

/// A freshly issued certificate, both halves as PEM.
pub(crate) struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

pub(crate) struct AcmeClient {
    settings: AcmeSettings,
    store: CertStore,
    challenges: Challenges,
    order_timeout: Duration,
    /// One account per contact e-mail (`None` = no contact), created on first use.
    accounts: tokio::sync::Mutex<HashMap<Option<String>, Account>>,
}

impl AcmeClient {
    pub fn new(
        settings: AcmeSettings,
        store: CertStore,
        challenges: Challenges,
        order_timeout: Duration,
    ) -> Self {
        AcmeClient {
            settings,
            store,
            challenges,
            order_timeout,
            accounts: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn directory(&self) -> &str {
        self.settings.directory()
    }

    /// Orders one certificate covering `names` (canonical first) and waits for it, as the
    /// account whose contact is `email` (the app's `acme_email`), else `acme.email`.
    /// A request the CA refused for its nonce (`badNonce`, which RFC 8555 §6.5 says to retry,
    /// and which CAs send now and then) starts the order again, up to three times in all.
    pub async fn issue(&self, names: &[String], email: Option<&str>) -> Result<Issued, TlsError> {
        let mut attempt = 1;
        loop {
            match self.issue_once(names, email).await {
                Err(e) if attempt < BAD_NONCE_ATTEMPTS && is_bad_nonce(&e) => {
                    tracing::info!(
                        domain = names.first().map(String::as_str).unwrap_or_default(),
                        attempt,
                        "the CA refused a nonce; ordering again"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn issue_once(&self, names: &[String], email: Option<&str>) -> Result<Issued, TlsError> {
        let domain = names.first().cloned().unwrap_or_default();
        let email = email.or(self.settings.email.as_deref()).map(str::to_string);
        let account = self.account(email).await?;
        let fail = |step: &'static str| {
            let domain = domain.clone();
            let directory = self.directory().to_string();
            move |err: instant_acme::Error| TlsError::Acme {
                domain,
                directory,
                step,
                detail: describe_acme_error(&err),
            }
        };
        let identifiers: Vec<Identifier> = names
            .iter()
            .map(|name| Identifier::Dns(name.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(fail("creating the order"))?;
        // Removes the published key authorizations however this function ends.
        let mut published = PublishedTokens::new(self.challenges.clone());
        self.answer_challenges(&mut order, &mut published, &domain)
            .await?;

        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.order_timeout);
        let status = order.poll_ready(&retry).await.map_err(fail(
            "waiting for the CA to validate the HTTP-01 challenges",
        ))?;
        if status != OrderStatus::Ready {
            return Err(TlsError::Acme {
                domain: domain.clone(),
                directory: self.directory().to_string(),
                step: "validating the HTTP-01 challenges",
                detail: validation_failure(&mut order).await,
            });
        }
        let (key_pem, csr) = key_and_csr(names)?;
        order
            .finalize_csr(&csr)
            .await
            .map_err(fail("finalizing the order"))?;
        let chain_pem = order
            .poll_certificate(&retry)
            .await
            .map_err(fail("downloading the certificate"))?;
        Ok(Issued { chain_pem, key_pem })
    }

    async fn answer_challenges(
        &self,
        order: &mut Order,
        published: &mut PublishedTokens,
        domain: &str,
    ) -> Result<(), TlsError> {
        let directory = self.directory().to_string();
        let fail = |step: &'static str, detail: String| TlsError::Acme {
            domain: domain.to_string(),
            directory: directory.clone(),
            step,
            detail,
        };
        let mut authorizations = order.authorizations();
        while let Some(result) = authorizations.next().await {
            let mut authz =
                result.map_err(|e| fail("fetching authorizations", describe_acme_error(&e)))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    let detail = format!("authorization for {} is {other:?}", authz.identifier());
                    return Err(fail("fetching authorizations", detail));
                }
            }
            let identifier = authz.identifier().to_string();
            let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                fail(
                    "choosing a challenge",
                    format!("the CA offers no HTTP-01 challenge for {identifier}"),
                )
            })?;
            let key_authorization = challenge.key_authorization().as_str().to_string();
            published.publish(challenge.token.clone(), key_authorization);
            challenge
                .set_ready()
                .await
                .map_err(|e| fail("starting validation", describe_acme_error(&e)))?;
        }
        Ok(())
    }

    /// The persisted account for this directory and contact, created and saved on first use.
    async fn account(&self, email: Option<String>) -> Result<Account, TlsError> {
        let mut cached = self.accounts.lock().await;
        if let Some(account) = cached.get(&email) {
            return Ok(account.clone());
        }
        let directory = self.directory().to_string();
        let account_err = |detail: String| TlsError::AcmeAccount {
            directory: directory.clone(),
            detail,
        };
        let path = self.store.account_path(&directory, email.as_deref());
        let builder = Account::builder_with_http(http_client(self.settings.ca_bundle.as_deref())?);
        let account = match read_optional(&path)? {
            Some(json) => {
                let credentials: AccountCredentials =
                    serde_json::from_slice(&json).map_err(|e| {
                        account_err(format!(
                            "credentials file {} is corrupt: {e}",
                            path.display()
                        ))
                    })?;
                builder
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| account_err(describe_acme_error(&e)))?
            }
            None => {
                let contact = email.as_ref().map(|email| format!("mailto:{email}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new_account = NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = builder
                    .create(&new_account, directory.clone(), None)
                    .await
                    .map_err(|e| account_err(describe_acme_error(&e)))?;
                let json = serde_json::to_vec_pretty(&credentials)
                    .map_err(|e| account_err(format!("cannot serialize credentials: {e}")))?;
                write_atomic(&path, &json)?;
                tracing::info!(directory = %directory, account = account.id(), "created ACME account");
                account
            }
        };
        cached.insert(email, account.clone());
        Ok(account)
    }
}

/// What the CA said about each failed challenge of an invalid order.
async fn validation_failure(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    if let Some(problem) = &order.state().error {
        reasons.push(describe_problem(problem));
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for challenge in &authz.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!(
                    "{}: {}",
                    authz.identifier(),
                    describe_problem(problem)
                ));
            }
        }
    }
    if reasons.is_empty() {
        "the order became invalid without a reason from the CA".to_string()
    } else {
        reasons.join("; ")
    }
}

/// HTTPS client for the directory: web PKI roots plus the operator's extra bundle.
fn http_client(ca_bundle: Option<&Path>) -> Result<Box<dyn HttpClient>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_bundle {
        add_bundle(&mut roots, path)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Ok(Box::new(client))
}

fn add_bundle(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let bundle_err = |reason: String| TlsError::CaBundle {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| TlsError::io("read", path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bundle_err(format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bundle_err("contains no CERTIFICATE block".into()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bundle_err(format!("unusable CA certificate: {e}")))?;
    }
    Ok(())
}

/// Tokens published for one order; withdrawn from the shared map on drop.
struct PublishedTokens {
    challenges: Challenges,
    tokens: Vec<String>,
}

impl PublishedTokens {
    fn new(challenges: Challenges) -> Self {
        PublishedTokens {
            challenges,
            tokens: Vec::new(),
        }
    }

    fn publish(&mut self, token: String, key_authorization: String) {
        lock(&self.challenges).insert(token.clone(), key_authorization);
        self.tokens.push(token);
    }
}

impl Drop for PublishedTokens {
    fn drop(&mut self) {
        let mut map = lock(&self.challenges);
        for token in &self.tokens {
            map.remove(token);
        }
    }
}

/// A poisoned map is still a valid map (plain inserts/removes), so keep using it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Orders tried when the CA keeps refusing nonces.
const BAD_NONCE_ATTEMPTS: u32 = 3;

fn is_bad_nonce(err: &TlsError) -> bool {
    matches!(err, TlsError::Acme { detail, .. } if detail.contains("badNonce"))
}
