//! The route table: which app owns which host, its aliases and its backends. Readers load an
//! immutable snapshot through `ArcSwap` (no lock on the request path); writers build a new
//! snapshot under a writer mutex and swap it in.

use foldhash::{HashMap, HashMapExt};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::backend::Backend;

/// A domain an app answers on, with the aliases that redirect (301) to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRoute {
    /// The host the app is served on.
    pub canonical: String,
    /// Hosts that answer 301 to `canonical`, path and query kept.
    pub aliases: Vec<String>,
}

/// Everything the proxy needs to know about one app.
#[derive(Debug, Clone)]
pub struct AppRoute {
    /// App name (unique on this server).
    pub app: String,
    /// Domains of the app.
    pub domains: Vec<DomainRoute>,
    /// All backends of the app; only the ready ones get traffic.
    pub backends: Vec<Arc<Backend>>,
}

/// What a host resolves to.
#[derive(Debug)]
pub(crate) enum HostMatch<'a> {
    /// Serve the app.
    App(&'a Arc<RoutedApp>),
    /// Redirect to this canonical host.
    Alias(&'a str),
}

/// Cloning shares the cursor, which is what carrying an app into a new snapshot needs.
#[derive(Debug, Clone)]
pub(crate) struct RoutedApp {
    pub(crate) route: AppRoute,
    /// Shared across snapshots so round-robin keeps its position when backends change.
    cursor: Arc<AtomicUsize>,
}

#[derive(Debug)]
enum HostEntry {
    App(String),
    Alias(String),
}

/// An immutable snapshot of all routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    apps: HashMap<String, Arc<RoutedApp>>,
    hosts: HashMap<String, HostEntry>,
}

/// Errors from changing the route table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// Two apps claim the same host.
    #[error(
        "domain {host} of app {app} is already used by app {owner}; remove it from one of them"
    )]
    DomainTaken {
        /// The contested host.
        host: String,
        /// The app being set.
        app: String,
        /// The app that already owns the host.
        owner: String,
    },
    /// `set_backends` for an app that has no route.
    #[error("app {0} has no route; deploy it with domains first")]
    UnknownApp(String),
}

impl RouteTable {
    /// The app serving `host` (any case, with or without port or trailing dot).
    #[cfg(test)]
    pub(crate) fn lookup(&self, host: &str) -> Option<HostMatch<'_>> {
        self.lookup_normalized(&normalize_host(host))
    }

    /// [`RouteTable::lookup`] of a name [`normalize_host`] returned: the proxy normalizes a
    /// request's host once, for this and for the TLS side's certificate check.
    pub(crate) fn lookup_normalized(&self, host: &str) -> Option<HostMatch<'_>> {
        match self.hosts.get(host)? {
            HostEntry::App(app) => self.apps.get(app).map(HostMatch::App),
            HostEntry::Alias(canonical) => Some(HostMatch::Alias(canonical)),
        }
    }

    /// The routed app named `app`, as the proxy holds it.
    pub(crate) fn routed_app(&self, app: &str) -> Option<&Arc<RoutedApp>> {
        self.apps.get(app)
    }

    /// The route of `app`, if any.
    pub fn app(&self, app: &str) -> Option<&AppRoute> {
        self.apps.get(app).map(|e| &e.route)
    }

    /// The app that serves `host`, as canonical domain or alias (any case, port, trailing dot).
    pub fn owner(&self, host: &str) -> Option<&str> {
        match self.hosts.get(normalize_host(host).as_ref())? {
            HostEntry::App(app) => Some(app),
            HostEntry::Alias(canonical) => self.owner_of(canonical).map(String::as_str),
        }
    }

    /// Names of all routed apps.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.apps.keys().map(String::as_str)
    }

    fn with_app(
        &self,
        route: AppRoute,
        cursor: Arc<AtomicUsize>,
    ) -> Result<RouteTable, RouteError> {
        let mut hosts: HashMap<String, HostEntry> = HashMap::with_capacity(self.hosts.len() + 4);
        for (host, entry) in &self.hosts {
            let owner = match entry {
                HostEntry::App(a) => a,
                HostEntry::Alias(c) => self.owner_of(c).unwrap_or(c),
            };
            if owner != &route.app {
                hosts.insert(host.clone(), clone_entry(entry));
            }
        }
        for domain in &route.domains {
            let canonical = normalize_host(&domain.canonical).into_owned();
            claim(
                &mut hosts,
                &canonical,
                &route.app,
                HostEntry::App(route.app.clone()),
                self,
            )?;
            for alias in &domain.aliases {
                let alias = normalize_host(alias).into_owned();
                claim(
                    &mut hosts,
                    &alias,
                    &route.app,
                    HostEntry::Alias(canonical.clone()),
                    self,
                )?;
            }
        }
        let mut apps: HashMap<String, Arc<RoutedApp>> = self
            .apps
            .iter()
            .filter(|(name, _)| **name != route.app)
            .map(|(name, e)| (name.clone(), e.clone()))
            .collect();
        apps.insert(route.app.clone(), Arc::new(RoutedApp { route, cursor }));
        Ok(RouteTable { apps, hosts })
    }

    fn owner_of(&self, canonical: &str) -> Option<&String> {
        match self.hosts.get(canonical)? {
            HostEntry::App(a) => Some(a),
            HostEntry::Alias(_) => None,
        }
    }

    fn without_app(&self, app: &str) -> RouteTable {
        let apps = self
            .apps
            .iter()
            .filter(|(name, _)| name.as_str() != app)
            .map(|(name, e)| (name.clone(), e.clone()))
            .collect();
        let hosts = self
            .hosts
            .iter()
            .filter(|(_, entry)| match entry {
                HostEntry::App(a) => a != app,
                HostEntry::Alias(c) => self.owner_of(c).is_some_and(|o| o != app),
            })
            .map(|(h, e)| (h.clone(), clone_entry(e)))
            .collect();
        RouteTable { apps, hosts }
    }
}

fn clone_entry(entry: &HostEntry) -> HostEntry {
    match entry {
        HostEntry::App(a) => HostEntry::App(a.clone()),
        HostEntry::Alias(c) => HostEntry::Alias(c.clone()),
    }
}

fn claim(
    hosts: &mut HashMap<String, HostEntry>,
    host: &str,
    app: &str,
    entry: HostEntry,
    old: &RouteTable,
) -> Result<(), RouteError> {
    if let Some(existing) = hosts.get(host) {
        let owner = match existing {
            HostEntry::App(a) => a.clone(),
            HostEntry::Alias(c) => old.owner_of(c).cloned().unwrap_or_else(|| app.to_string()),
        };
        if owner != app {
            return Err(RouteError::DomainTaken {
                host: host.to_string(),
                app: app.to_string(),
                owner,
            });
        }
        // The same app listing a host twice (e.g. alias == canonical): first claim wins.
        return Ok(());
    }
    hosts.insert(host.to_string(), entry);
    Ok(())
}

impl RoutedApp {
    /// The next ready backend in round-robin order, passing over `exclude` (the one that just
    /// failed to connect) and not-ready ones.
    pub(crate) fn pick(&self, exclude: Option<&Arc<Backend>>) -> Option<&Arc<Backend>> {
        let eligible =
            |b: &&Arc<Backend>| b.is_ready() && exclude.is_none_or(|x| !Arc::ptr_eq(x, b));
        let backends = &self.route.backends;
        // Count first so not-ready backends do not skew the rotation towards their neighbours.
        let count = backends.iter().filter(eligible).count();
        if count == 0 {
            return None;
        }
        let nth = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
        // Readiness may flip between the two passes; fall back to any eligible backend.
        backends
            .iter()
            .filter(eligible)
            .nth(nth)
            .or_else(|| backends.iter().find(eligible))
    }

    pub(crate) fn name(&self) -> &str {
        &self.route.app
    }
}

/// Lower-case `host`, strip a port and a trailing dot. Borrows when nothing changes. The one
/// host spelling of the crate: Host matching here, SNI and certificate names in `tls`.
pub(crate) fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = strip_port(trim(host));
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// `str::trim`, without its char-by-char walk when both ends are ASCII and not whitespace:
/// every Host of every request comes through here, and nearly all are such.
fn trim(host: &str) -> &str {
    let kept =
        |end: Option<&u8>| end.is_some_and(|&b| b.is_ascii() && !char::from(b).is_whitespace());
    let bytes = host.as_bytes();
    if kept(bytes.first()) && kept(bytes.last()) {
        host
    } else {
        host.trim()
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop what follows `]`.
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    // By bytes: a host is a few bytes long, shorter than `rfind`'s searcher takes to set up.
    match host.bytes().rposition(|b| b == b':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// The shared handle to the route table: cheap to clone, readers never block.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    table: Arc<ArcSwap<RouteTable>>,
    /// Serializes writers so read-modify-write swaps never lose an update.
    writer: Arc<Mutex<()>>,
}

impl Routes {
    /// An empty route table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The current snapshot for one request: no reference count is taken (arc-swap's guard),
    /// so hold it only for a lookup, never across an await.
    pub(crate) fn snapshot(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// Add or replace an app's route (domains, aliases, backends). Fails, changing nothing,
    /// when a host is owned by another app.
    pub fn set_app(&self, route: AppRoute) -> Result<(), RouteError> {
        let _w = self.lock_writer();
        let current = self.table.load();
        let cursor = current
            .apps
            .get(&route.app)
            .map(|e| Arc::clone(&e.cursor))
            .unwrap_or_default();
        let next = current.with_app(route, cursor)?;
        self.table.store(Arc::new(next));
        Ok(())
    }

    /// Remove an app and all its hosts. Returns the removed route (its backends to drain).
    pub fn remove_app(&self, app: &str) -> Option<AppRoute> {
        let _w = self.lock_writer();
        let current = self.table.load();
        let removed = current.app(app).cloned()?;
        self.table.store(Arc::new(current.without_app(app)));
        Some(removed)
    }

    /// Replace the backends of an existing app; its domains stay.
    pub fn set_backends(&self, app: &str, backends: Vec<Arc<Backend>>) -> Result<(), RouteError> {
        let _w = self.lock_writer();
        let current = self.table.load();
        let entry = current
            .apps
            .get(app)
            .ok_or_else(|| RouteError::UnknownApp(app.to_string()))?;
        let route = AppRoute {
            backends,
            ..entry.route.clone()
        };
        let next = current.with_app(route, Arc::clone(&entry.cursor))?;
        self.table.store(Arc::new(next));
        Ok(())
    }

    /// The current route of `app` (for status).
    pub fn app(&self, app: &str) -> Option<AppRoute> {
        self.table.load().app(app).cloned()
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[path = "tests/routes.rs"]
mod tests;
