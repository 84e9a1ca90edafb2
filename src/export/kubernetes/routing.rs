//! How requests reach the app: a Service for its port, an Ingress or Gateway API HTTPRoutes for
//! its domains (aliases answered with a 301 to the canonical domain, as haloyd does), and
//! cert-manager objects for its certificates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::crds::{
    AcmeIssuer, AcmeSolver, Certificate, CertificateSpec, ClusterIssuer, ClusterIssuerSpec,
    Http01GatewayRoute, Http01Ingress, Http01Solver, HttpBackendRef, HttpRequestRedirect,
    HttpRoute, HttpRouteFilter, HttpRouteRule, HttpRouteSpec, IssuerRef, ParentReference,
    SecretRef,
};
use super::workload::PORT_NAME;
use super::{Export, Names, Object, Options, Routing};
use crate::config::{DomainSpec, ResolvedApp};

/// The Service listens on the app's own port, so in-cluster clients use the same port as on
/// a haloy server.
const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// ingress-nginx's annotation for a permanent redirect (other controllers ignore it).
const NGINX_REDIRECT: &str = "nginx.ingress.kubernetes.io/permanent-redirect";

pub(super) fn add(app: &ResolvedApp, options: &Options, names: &Names, out: &mut Export) {
    out.objects.push(Object::Service(service(app, names)));
    if app.domains.is_empty() {
        return;
    }
    let tls = options.cert_manager_issuer.is_some();
    match &options.routing {
        Routing::Ingress { class } => {
            out.objects
                .push(Object::Ingress(ingress(app, names, class.clone(), tls)));
            for domain in app.domains.iter().filter(|d| !d.aliases.is_empty()) {
                out.objects.push(Object::Ingress(alias_ingress(
                    names,
                    class.clone(),
                    domain,
                    tls,
                )));
            }
            if app.domains.iter().any(|d| !d.aliases.is_empty()) {
                out.notes.push(format!(
                    "domains: aliases redirect (301) through ingress-nginx's `{NGINX_REDIRECT}` \
                     annotation; other Ingress controllers serve the app on them without a \
                     redirect (use --gateway for a portable RequestRedirect)"
                ));
            }
        }
        Routing::Gateway { name, namespace } => {
            let parent = ParentReference {
                name: name.clone(),
                namespace: namespace.clone(),
            };
            out.objects
                .push(Object::HttpRoute(route(app, names, parent.clone())));
            for domain in app.domains.iter().filter(|d| !d.aliases.is_empty()) {
                out.objects.push(Object::HttpRoute(alias_route(
                    names,
                    parent.clone(),
                    domain,
                )));
            }
            if tls {
                out.notes.push(format!(
                    "domains: HTTPS is terminated by the Gateway `{name}`: its listeners must \
                     reference the Secret `{}` that the Certificate fills",
                    names.tls_secret()
                ));
            }
        }
    }
    match &options.cert_manager_issuer {
        Some(issuer) => {
            out.objects
                .push(Object::Certificate(certificate(app, names, issuer)));
            match &app.acme_email {
                Some(email) => out.objects.push(Object::ClusterIssuer(cluster_issuer(
                    issuer,
                    email,
                    &options.routing,
                ))),
                None => out.notes.push(format!(
                    "acme_email: not set, so no ClusterIssuer `{issuer}` is written; the \
                     Certificate needs one to exist in the cluster"
                )),
            }
        }
        None => out.notes.push(
            "domains: no certificates exported (haloyd gets them from ACME itself); add \
             --cert-manager ISSUER for cert-manager Certificates"
                .into(),
        ),
    }
}

fn service(app: &ResolvedApp, names: &Names) -> Service {
    Service {
        metadata: names.meta(&names.app),
        spec: Some(ServiceSpec {
            selector: Some(names.selector()),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: i32::from(app.port),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn backend(names: &Names) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: names.app.clone(),
            port: Some(ServiceBackendPort {
                name: Some(PORT_NAME.into()),
                number: None,
            }),
        }),
        ..IngressBackend::default()
    }
}

fn rule(host: &str, names: &Names) -> IngressRule {
    IngressRule {
        host: Some(host.to_string()),
        http: Some(HTTPIngressRuleValue {
            paths: vec![HTTPIngressPath {
                path: Some("/".into()),
                path_type: "Prefix".into(),
                backend: backend(names),
            }],
        }),
    }
}

fn all_hosts(app: &ResolvedApp) -> Vec<String> {
    app.domains
        .iter()
        .flat_map(|d| std::iter::once(&d.domain).chain(&d.aliases))
        .cloned()
        .collect()
}

fn ingress_tls(hosts: Vec<String>, names: &Names, tls: bool) -> Option<Vec<IngressTLS>> {
    tls.then(|| {
        vec![IngressTLS {
            hosts: Some(hosts),
            secret_name: Some(names.tls_secret()),
        }]
    })
}

fn ingress(app: &ResolvedApp, names: &Names, class: Option<String>, tls: bool) -> Ingress {
    let canonical: Vec<String> = app.domains.iter().map(|d| d.domain.clone()).collect();
    Ingress {
        metadata: names.meta(&names.app),
        spec: Some(IngressSpec {
            ingress_class_name: class,
            rules: Some(canonical.iter().map(|h| rule(h, names)).collect()),
            tls: ingress_tls(canonical, names, tls),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// One Ingress per canonical domain with aliases: the redirect annotation applies to a whole
/// Ingress, and each domain's aliases go to their own canonical host.
fn alias_ingress(names: &Names, class: Option<String>, domain: &DomainSpec, tls: bool) -> Ingress {
    let mut meta: ObjectMeta = names.meta(format!("{}-{}", names.app, dns_label(&domain.domain)));
    let mut annotations = BTreeMap::new();
    annotations.insert(
        NGINX_REDIRECT.to_string(),
        format!(
            "{}://{}$request_uri",
            if tls { "https" } else { "http" },
            domain.domain
        ),
    );
    meta.annotations = Some(annotations);
    Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: class,
            rules: Some(domain.aliases.iter().map(|h| rule(h, names)).collect()),
            tls: ingress_tls(domain.aliases.clone(), names, tls),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// `www.example.com` → `www-example-com`, for object names.
fn dns_label(host: &str) -> String {
    host.replace('.', "-")
}

fn route(app: &ResolvedApp, names: &Names, parent: ParentReference) -> HttpRoute {
    HttpRoute {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        metadata: names.meta(&names.app),
        spec: HttpRouteSpec {
            parent_refs: vec![parent],
            hostnames: app.domains.iter().map(|d| d.domain.clone()).collect(),
            rules: vec![HttpRouteRule {
                filters: Vec::new(),
                backend_refs: vec![HttpBackendRef {
                    name: names.app.clone(),
                    port: app.port,
                }],
            }],
        },
    }
}

/// Aliases answer 301 to their canonical domain: one route per canonical domain, since a
/// RequestRedirect names one hostname.
fn alias_route(names: &Names, parent: ParentReference, domain: &DomainSpec) -> HttpRoute {
    HttpRoute {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        metadata: names.meta(format!("{}-{}", names.app, dns_label(&domain.domain))),
        spec: HttpRouteSpec {
            parent_refs: vec![parent],
            hostnames: domain.aliases.clone(),
            rules: vec![HttpRouteRule {
                filters: vec![HttpRouteFilter {
                    type_: "RequestRedirect".into(),
                    request_redirect: HttpRequestRedirect {
                        hostname: domain.domain.clone(),
                        status_code: 301,
                    },
                }],
                backend_refs: Vec::new(),
            }],
        },
    }
}

fn certificate(app: &ResolvedApp, names: &Names, issuer: &str) -> Certificate {
    Certificate {
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        metadata: names.meta(&names.app),
        spec: CertificateSpec {
            secret_name: names.tls_secret(),
            dns_names: all_hosts(app),
            issuer_ref: IssuerRef {
                name: issuer.to_string(),
                kind: "ClusterIssuer".into(),
            },
        },
    }
}

fn cluster_issuer(name: &str, email: &str, routing: &Routing) -> ClusterIssuer {
    let http01 = match routing {
        Routing::Ingress { class } => Http01Solver {
            ingress: Some(Http01Ingress {
                ingress_class_name: class.clone(),
            }),
            gateway_http_route: None,
        },
        Routing::Gateway { name, namespace } => Http01Solver {
            ingress: None,
            gateway_http_route: Some(Http01GatewayRoute {
                parent_refs: vec![ParentReference {
                    name: name.clone(),
                    namespace: namespace.clone(),
                }],
            }),
        },
    };
    ClusterIssuer {
        api_version: "cert-manager.io/v1".into(),
        kind: "ClusterIssuer".into(),
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        spec: ClusterIssuerSpec {
            acme: AcmeIssuer {
                server: LETS_ENCRYPT.into(),
                email: email.to_string(),
                private_key_secret_ref: SecretRef {
                    name: format!("{name}-account-key"),
                },
                solvers: vec![AcmeSolver { http01 }],
            },
        },
    }
}
