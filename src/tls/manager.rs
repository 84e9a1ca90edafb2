//! `CertificateManager`: keeps one certificate per `DomainSet` current (ACME or operator
//! files), publishes them to the SNI resolver, answers the proxy's `TlsHooks`, tracks status
//! for `haloy status`, retries failures with backoff, renews in the background and deletes
//! certificates of domains that stayed unused for the grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::acme::{lock, AcmeClient, Challenges};
use super::certs::{load_pair, provider, self_signed_default, LoadedCertificate};
use super::error::TlsError;
use super::resolver::{CertMap, SniResolver};
use super::settings::{DomainSet, OperatorCertificate, TlsSettings, UnknownSni};
use super::store::{validate_domain, CertStore, StoredMeta};
use crate::proxy::normalize_host;
use crate::proxy::tls_hooks::TlsHooks;

/// Where a domain's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateSource {
    Acme,
    Operator,
}

/// One line of `haloy status` for a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub domain: String,
    pub aliases: Vec<String>,
    pub source: CertificateSource,
    /// Names the served certificate actually covers.
    pub covers: Vec<String>,
    #[serde(with = "rfc3339_opt")]
    pub expires: Option<SystemTime>,
    pub last_error: Option<String>,
    pub failures: u32,
    #[serde(with = "rfc3339_opt")]
    pub next_retry: Option<SystemTime>,
    /// Set while no deployed app uses the domain; deleted after the grace period.
    #[serde(with = "rfc3339_opt")]
    pub unused_since: Option<SystemTime>,
}

#[derive(Debug, Clone)]
struct Entry {
    set: DomainSet,
    source: CertificateSource,
    cert: Option<LoadedCertificate>,
    last_error: Option<String>,
    failures: u32,
    next_retry: Option<SystemTime>,
    unused_since: Option<SystemTime>,
    force_renewal: bool,
    /// ACME directory that issued `cert` (empty for operator files and unknown history).
    issuer_directory: String,
}

impl Entry {
    fn new(set: DomainSet, source: CertificateSource) -> Self {
        Entry {
            set,
            source,
            cert: None,
            last_error: None,
            failures: 0,
            next_retry: None,
            unused_since: None,
            force_renewal: false,
            issuer_directory: String::new(),
        }
    }

    fn status(&self) -> CertificateStatus {
        CertificateStatus {
            domain: self.set.canonical.clone(),
            aliases: self.set.aliases.clone(),
            source: self.source,
            covers: self
                .cert
                .as_ref()
                .map(|c| c.names.clone())
                .unwrap_or_default(),
            expires: self.cert.as_ref().map(|c| c.not_after),
            last_error: self.last_error.clone(),
            failures: self.failures,
            next_retry: self.next_retry,
            unused_since: self.unused_since,
        }
    }

    /// Why a new order is due now, if it is.
    fn renewal_reason(
        &self,
        now: SystemTime,
        renew_before: Duration,
        directory: &str,
    ) -> Option<&'static str> {
        let Some(cert) = &self.cert else {
            return Some("no certificate yet");
        };
        if self.force_renewal {
            return Some("renewal requested");
        }
        // E.g. staging → production: a staging certificate is not trusted by browsers.
        if !self.issuer_directory.is_empty() && self.issuer_directory != directory {
            return Some("issued by another ACME directory");
        }
        if cert.not_after.duration_since(now).unwrap_or_default() < renew_before {
            return Some("expires soon");
        }
        let wanted: BTreeSet<String> = self.set.names().into_iter().collect();
        let covered: BTreeSet<String> = cert.names.iter().cloned().collect();
        if wanted != covered {
            return Some("alias set changed");
        }
        None
    }

    fn record_failure(&mut self, error: String, now: SystemTime, settings: &TlsSettings) {
        self.failures += 1;
        let exponent = self.failures.saturating_sub(1).min(16);
        let delay = settings
            .retry_base
            .saturating_mul(1u32 << exponent)
            .min(settings.retry_max);
        self.next_retry = Some(now + delay);
        self.last_error = Some(error);
        // A forced renewal is a one-shot request; retries follow the normal rules.
        self.force_renewal = false;
    }

    fn record_success(&mut self, cert: LoadedCertificate) {
        self.cert = Some(cert);
        self.clear_failures();
    }

    fn clear_failures(&mut self) {
        self.last_error = None;
        self.failures = 0;
        self.next_retry = None;
        self.force_renewal = false;
    }
}

#[derive(Default)]
struct State {
    /// Domain sets of the last `ensure_certificates` call; `None` before the first one.
    desired: Option<Vec<DomainSet>>,
    entries: BTreeMap<String, Entry>,
}

pub struct CertificateManager {
    settings: TlsSettings,
    store: CertStore,
    resolver: Arc<SniResolver>,
    server_config: Arc<ServerConfig>,
    challenges: Challenges,
    acme: AcmeClient,
    state: Mutex<State>,
    /// One certificate pass at a time (deploys, the renewal task and forced renewals).
    pass: tokio::sync::Mutex<()>,
}

impl CertificateManager {
    /// Opens `<state_dir>/certs`, loads what is stored there and the operator's files, and
    /// starts serving them. No network access: ordering happens in `ensure_certificates`.
    pub fn new(settings: TlsSettings) -> Result<Arc<Self>, TlsError> {
        let store = CertStore::open(&settings.state_dir)?;
        let fallback = match settings.unknown_sni {
            UnknownSni::Refuse => None,
            UnknownSni::SelfSigned => Some(self_signed_default()?),
        };
        let resolver = Arc::new(SniResolver::new(fallback));
        let server_config = build_server_config(resolver.clone())?;
        let challenges = Challenges::default();
        let acme = AcmeClient::new(
            settings.acme.clone(),
            store.clone(),
            challenges.clone(),
            settings.order_timeout,
        );
        let manager = CertificateManager {
            settings,
            store,
            resolver,
            server_config,
            challenges,
            acme,
            state: Mutex::new(State::default()),
            pass: tokio::sync::Mutex::new(()),
        };
        manager.load_stored()?;
        manager.load_operator_certificates(&[]);
        manager.publish();
        Ok(Arc::new(manager))
    }

    /// rustls config for the HTTPS listener: TLS 1.3 and 1.2 only, ALPN h2 then http/1.1,
    /// certificates chosen by SNI from the live resolver.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    pub fn resolver(&self) -> Arc<SniResolver> {
        self.resolver.clone()
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.store.root().to_path_buf()
    }

    pub fn statuses(&self) -> Vec<CertificateStatus> {
        lock(&self.state)
            .entries
            .values()
            .map(Entry::status)
            .collect()
    }

    pub fn status(&self, domain: &str) -> Option<CertificateStatus> {
        lock(&self.state)
            .entries
            .get(normalize_host(domain).as_ref())
            .map(Entry::status)
    }

    /// Brings certificates in line with `domains` (the full set in use): orders missing ones,
    /// renews those expiring within `renew_before` or whose alias set changed, reloads
    /// operator files, starts the removal grace for domains no longer listed. Failures are
    /// recorded per domain (status, backoff); the previous certificate keeps serving.
    pub async fn ensure_certificates(&self, domains: &[DomainSet]) -> Vec<CertificateStatus> {
        let _pass = self.pass.lock().await;
        let desired: Vec<DomainSet> = domains.iter().map(DomainSet::normalized).collect();
        lock(&self.state).desired = Some(desired.clone());
        self.run_pass(&desired).await;
        self.statuses()
    }

    /// Orders a new certificate for `domain` now, ignoring expiry and backoff.
    pub async fn force_renewal(&self, domain: &str) -> Result<CertificateStatus, TlsError> {
        let _pass = self.pass.lock().await;
        let domain = normalize_host(domain).into_owned();
        let set = {
            let mut state = lock(&self.state);
            let entry = state.entries.get_mut(&domain);
            let invalid = |reason| TlsError::InvalidDomain {
                domain: domain.clone(),
                reason,
            };
            let entry =
                entry.ok_or_else(|| invalid("no certificate is managed for this domain"))?;
            if entry.source == CertificateSource::Operator {
                return Err(invalid("its certificate comes from the operator's files"));
            }
            if entry.unused_since.is_some() {
                return Err(invalid("no deployed app uses this domain"));
            }
            entry.force_renewal = true;
            entry.set.clone()
        };
        self.ensure_one(&set).await;
        self.publish();
        let status = self.status(&domain);
        match status {
            Some(status) if status.last_error.is_none() => Ok(status),
            Some(status) => Err(TlsError::Acme {
                domain,
                directory: self.acme.directory().to_string(),
                step: "renewing",
                detail: status.last_error.unwrap_or_default(),
            }),
            None => Err(TlsError::InvalidDomain {
                domain,
                reason: "the domain disappeared while renewing",
            }),
        }
    }

    /// Background loop: re-runs the last pass every `check_interval`, earlier when a retry
    /// is due. Ends when `shutdown` is cancelled.
    pub fn spawn_renewal_task(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let wait = manager.time_until_next_check(SystemTime::now());
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                let desired = lock(&manager.state).desired.clone();
                if let Some(desired) = desired {
                    let _pass = manager.pass.lock().await;
                    // Shutdown must not wait for a slow CA; an abandoned order is harmless
                    // (its challenge tokens are withdrawn on drop, files are written whole).
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = manager.run_pass(&desired) => {}
                    }
                }
            }
        })
    }

    fn time_until_next_check(&self, now: SystemTime) -> Duration {
        let state = lock(&self.state);
        state
            .entries
            .values()
            .filter(|entry| entry.unused_since.is_none())
            .filter_map(|entry| entry.next_retry)
            .map(|at| at.duration_since(now).unwrap_or_default())
            .chain(std::iter::once(self.settings.check_interval))
            .min()
            .unwrap_or(self.settings.check_interval)
            .max(Duration::from_millis(50))
    }

    async fn run_pass(&self, desired: &[DomainSet]) {
        self.retire_unused(desired, SystemTime::now());
        self.load_operator_certificates(desired);
        for set in desired {
            if self.is_operator_domain(&set.canonical) {
                continue;
            }
            self.ensure_one(set).await;
        }
        self.publish();
    }

    async fn ensure_one(&self, set: &DomainSet) {
        let now = SystemTime::now();
        let reason = {
            let mut state = lock(&self.state);
            let entry = state
                .entries
                .entry(set.canonical.clone())
                .or_insert_with(|| Entry::new(set.clone(), CertificateSource::Acme));
            if entry.set != *set {
                // New names deserve a fresh attempt; the old backoff was about other names.
                entry.next_retry = None;
                entry.failures = 0;
            }
            entry.set = set.clone();
            if entry.unused_since.take().is_some() {
                self.persist_unused_since(&set.canonical, set, None);
            }
            let directory = self.acme.directory();
            let Some(reason) = entry.renewal_reason(now, self.settings.renew_before, directory)
            else {
                // Nothing due (e.g. the names went back to what the certificate covers):
                // stale errors and retries no longer apply.
                entry.clear_failures();
                return;
            };
            let backing_off = entry.next_retry.is_some_and(|at| at > now);
            if backing_off && !entry.force_renewal {
                return;
            }
            reason
        };
        tracing::info!(domain = %set.canonical, aliases = %set.aliases.join(","), reason, "ordering certificate");
        let result = self.order_and_store(set).await;
        let installed = result.is_ok();
        if let Some(entry) = lock(&self.state).entries.get_mut(&set.canonical) {
            match result {
                Ok(cert) => {
                    tracing::info!(domain = %set.canonical, expires = %crate::timefmt::rfc3339(cert.not_after), "certificate installed");
                    entry.record_success(cert);
                    entry.issuer_directory = self.acme.directory().to_string();
                }
                Err(err) => {
                    tracing::warn!(domain = %set.canonical, error = %err, "certificate order failed; keeping the current one");
                    entry.record_failure(err.to_string(), SystemTime::now(), &self.settings);
                }
            }
        }
        // Serve it right away rather than after the other domains' orders.
        if installed {
            self.publish();
        }
    }

    async fn order_and_store(&self, set: &DomainSet) -> Result<LoadedCertificate, TlsError> {
        let names = set.names();
        // Never spend a CA request (and rate limit) on a name that cannot be valid.
        for name in &names {
            validate_domain(name)?;
        }
        let issued = self.acme.issue(&names, set.acme_email.as_deref()).await?;
        let domain = &set.canonical;
        let cert_path = self.store.root().join(domain).join("cert.pem");
        // Validate before writing so a bad response never replaces a good file.
        let loaded = load_pair(
            domain,
            &cert_path,
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )?;
        let meta = StoredMeta {
            names,
            directory: self.acme.directory().to_string(),
            unused_since: None,
        };
        self.store.save(
            domain,
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            &meta,
        )?;
        Ok(loaded)
    }

    /// Certificates found in `certs/` at start-up, served until a pass decides otherwise.
    fn load_stored(&self) -> Result<(), TlsError> {
        let mut state = lock(&self.state);
        for domain in self.store.domains()? {
            let stored = match self.store.load(&domain) {
                Ok(Some(stored)) => stored,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(domain = %domain, error = %err, "cannot read stored certificate");
                    continue;
                }
            };
            let aliases: Vec<&str> = stored
                .meta
                .names
                .iter()
                .skip(1)
                .map(String::as_str)
                .collect();
            let mut entry = Entry::new(DomainSet::new(&domain, &aliases), CertificateSource::Acme);
            entry.unused_since = stored
                .meta
                .unused_since
                .map(|s| UNIX_EPOCH + Duration::from_secs(s));
            entry.issuer_directory = stored.meta.directory.clone();
            match load_pair(
                &domain,
                &stored.cert_path,
                &stored.chain_pem,
                &stored.key_pem,
            ) {
                Ok(cert) => entry.cert = Some(cert),
                Err(err) => {
                    tracing::warn!(domain = %domain, error = %err, "stored certificate unusable; will re-order");
                    entry.last_error = Some(err.to_string());
                }
            }
            state.entries.insert(domain, entry);
        }
        Ok(())
    }

    fn is_operator_domain(&self, domain: &str) -> bool {
        self.settings
            .certificates
            .iter()
            .any(|c| normalize_host(&c.domain) == domain)
    }

    /// (Re)reads the operator's files each pass, so replacing them on disk takes effect at
    /// the next pass. Aliases come from the deployed domain set when there is one.
    fn load_operator_certificates(&self, desired: &[DomainSet]) {
        for operator in &self.settings.certificates {
            let domain = normalize_host(&operator.domain).into_owned();
            let set = desired
                .iter()
                .find(|set| set.canonical == domain)
                .cloned()
                .unwrap_or_else(|| DomainSet::new(&domain, &[]));
            let loaded = read_operator_pair(&domain, operator);
            let mut state = lock(&self.state);
            let entry = state
                .entries
                .entry(domain.clone())
                .or_insert_with(|| Entry::new(set.clone(), CertificateSource::Operator));
            entry.set = set;
            entry.source = CertificateSource::Operator;
            entry.unused_since = None;
            match loaded {
                Ok(cert) => entry.record_success(cert),
                Err(err) => {
                    tracing::warn!(domain = %domain, error = %err, "operator certificate unusable");
                    entry.last_error = Some(err.to_string());
                }
            }
        }
    }

    /// Starts the grace period for ACME domains no longer deployed and deletes those whose
    /// grace has passed.
    fn retire_unused(&self, desired: &[DomainSet], now: SystemTime) {
        let in_use: BTreeSet<&str> = desired.iter().map(|s| s.canonical.as_str()).collect();
        let mut state = lock(&self.state);
        let mut expired = Vec::new();
        for (domain, entry) in state.entries.iter_mut() {
            if in_use.contains(domain.as_str()) || entry.source == CertificateSource::Operator {
                continue;
            }
            let since = *entry.unused_since.get_or_insert_with(|| {
                self.persist_unused_since(domain, &entry.set, Some(now));
                now
            });
            if now.duration_since(since).unwrap_or_default() >= self.settings.removal_grace {
                expired.push(domain.clone());
            }
        }
        for domain in expired {
            tracing::info!(domain = %domain, "removing certificate of a domain no longer used");
            if let Err(err) = self.store.remove(&domain) {
                tracing::warn!(domain = %domain, error = %err, "could not remove certificate");
                continue;
            }
            state.entries.remove(&domain);
        }
    }

    fn persist_unused_since(&self, domain: &str, set: &DomainSet, since: Option<SystemTime>) {
        let Ok(Some(stored)) = self.store.load(domain) else {
            return;
        };
        let meta = StoredMeta {
            names: if stored.meta.names.is_empty() {
                set.names()
            } else {
                stored.meta.names
            },
            directory: stored.meta.directory,
            unused_since: since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        };
        if let Err(err) = self.store.save_meta(domain, &meta) {
            tracing::warn!(domain = %domain, error = %err, "could not record unused domain");
        }
    }

    /// Rebuilds the name → certificate map and swaps it in. A name is served only by its own
    /// domain's certificate, only if that certificate covers it and has not expired.
    fn publish(&self) {
        let now = SystemTime::now();
        let state = lock(&self.state);
        let mut map = CertMap::default();
        for entry in state.entries.values() {
            let Some(cert) = &entry.cert else { continue };
            if cert.not_after <= now {
                continue;
            }
            for name in entry.set.names() {
                if cert.names.contains(&name) {
                    map.insert(name, cert.key.clone());
                }
            }
        }
        drop(state);
        self.resolver.replace(map);
    }
}

impl TlsHooks for CertificateManager {
    fn challenge_response(&self, token: &str) -> Option<String> {
        lock(&self.challenges).get(token).cloned()
    }

    fn has_certificate(&self, host: &str) -> bool {
        self.resolver.contains_normalized(host)
    }
}

fn read_operator_pair(
    domain: &str,
    operator: &OperatorCertificate,
) -> Result<LoadedCertificate, TlsError> {
    let chain = std::fs::read(&operator.cert_file)
        .map_err(|e| TlsError::io("read", &operator.cert_file, e))?;
    let key = std::fs::read(&operator.key_file)
        .map_err(|e| TlsError::io("read", &operator.key_file, e))?;
    load_pair(domain, &operator.cert_file, &chain, &key)
}

fn build_server_config(resolver: Arc<SniResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `Option<SystemTime>` as an RFC 3339 string (UTC, seconds) in status JSON.
mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(time) => s.serialize_str(&humantime::format_rfc3339_seconds(*time).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_rfc3339(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
#[path = "tests/manager.rs"]
mod tests;
