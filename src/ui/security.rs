//! Browser safety for every answer of the OTLP/HTTP port, in one middleware: the headers that
//! keep pages from being framed, sniffed or cached and scripts from running unless they are
//! the UI's own; the Host allow-list that keeps a DNS-rebinding page from reading through a
//! visitor's browser; and the same-origin check on sign-in and sign-out.
//!
//! OTLP export (`/v1/...`) is left to any Host: exporters name the server however they reach
//! it, and no browser reads data from there.

use std::{collections::HashSet, net::IpAddr, sync::Arc};

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Router,
};

/// The Content-Security-Policy of the UI's pages: scripts and styles only from this server
/// (the pages carry no inline script), style attributes for colours and positions, no frames,
/// no base or form targets elsewhere.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     style-src-attr 'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The policy of every other answer (JSON, SVG, scripts, errors): nothing runs, nothing frames it.
pub const DATA_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// HSTS under TLS: a year, as browsers' preload lists expect.
const HSTS: &str = "max-age=31536000";

/// The Host names whose requests the read side answers.
#[derive(Clone)]
pub struct HostList {
    /// `*` was configured: any Host.
    any: bool,
    names: Arc<HashSet<String>>,
}

impl HostList {
    /// Loopback names (`localhost` and `*.localhost`), any IP address literal (a rebinding
    /// page has a name, never an address), and `configured` (names with or without a port;
    /// `*` for any).
    pub fn new(configured: &[String]) -> Self {
        let any = configured.iter().any(|name| name.trim() == "*");
        let names = configured.iter().map(|name| host_name(name.trim()).to_ascii_lowercase()).collect();
        Self { any, names: Arc::new(names) }
    }

    /// Whether a request for `host` (a Host header's value) is answered.
    pub fn admits(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = host_name(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        name == "localhost"
            || name.ends_with(".localhost")
            || name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok()
            || self.names.contains(name)
    }
}

/// A Host value without its port: `[::1]:4318` -> `[::1]`, `a.example:4318` -> `a.example`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The request's Host: the Host header, or the authority of an HTTP/2 request.
fn request_host(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

/// Whether a state-changing request came from this server's own pages: a browser names the
/// site it came from (`Sec-Fetch-Site`) and its origin (`Origin`); a request that names another
/// is refused. Clients that are not browsers send neither and are let through.
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    let site_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|site| site == "same-origin" || site == "none");
    let origin_ok = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_none_or(|origin| {
        let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
        authority.eq_ignore_ascii_case(host)
    });
    site_ok && origin_ok
}

/// Wraps `router` in the browser-safety middleware. `tls`: the port speaks only TLS (HSTS).
pub fn layer(router: Router, hosts: HostList, tls: bool) -> Router {
    router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        let hosts = hosts.clone();
        async move {
            let path = request.uri().path();
            let export = path.starts_with("/v1/");
            let host = request_host(&request).unwrap_or_default();
            if !export && !hosts.admits(&host) {
                let message = format!(
                    "this server does not answer for the host name {host:?}: add it to ui.allowed_hosts \
                     (OTELEPHANT_UI__ALLOWED_HOSTS) to read through it, or use an IP address or localhost\n"
                );
                return with_headers(
                    (
                        StatusCode::MISDIRECTED_REQUEST,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        message,
                    )
                        .into_response(),
                    tls,
                    export,
                );
            }
            let changes_sign_in = request.method() == Method::POST && (path == "/login" || path == "/logout");
            if changes_sign_in && !same_origin(request.headers(), &host) {
                return with_headers(
                    (
                        StatusCode::FORBIDDEN,
                        "sign-in and sign-out are accepted only from this server's own pages\n",
                    )
                        .into_response(),
                    tls,
                    export,
                );
            }
            with_headers(next.run(request).await, tls, export)
        }
    }))
}

/// The headers every answer gets; the Content-Security-Policy by what the answer is.
fn with_headers(mut response: Response, tls: bool, export: bool) -> Response {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    let headers = response.headers_mut();
    let policy = if html { PAGE_POLICY } else { DATA_POLICY };
    let fixed: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_SECURITY_POLICY, policy),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not no-referrer: under it a browser sends `Origin: null` with a form's POST, which
        // would leave sign-in nothing to check.
        (header::REFERRER_POLICY, "same-origin"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !export {
        // Browser SDKs export cross-origin under CORS; everything else is read by this origin only.
        headers.insert(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        );
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if tls {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_policy_runs_only_this_servers_scripts_and_cannot_be_framed() {
        let directives: Vec<&str> = PAGE_POLICY.split(';').map(str::trim).collect();
        assert_eq!(directives[0], "default-src 'none'");
        assert!(directives.contains(&"script-src 'self'"), "scripts from this server only, none inline");
        assert!(directives.contains(&"style-src 'self'"), "no inline style elements");
        assert!(directives.contains(&"frame-ancestors 'none'"));
        assert!(directives.contains(&"base-uri 'none'"));
        assert!(directives.contains(&"form-action 'self'"));
        let inline: Vec<&&str> = directives.iter().filter(|d| d.contains("unsafe")).collect();
        assert_eq!(inline, [&"style-src-attr 'unsafe-inline'"], "only style attributes may be inline");
        assert_eq!(DATA_POLICY, "default-src 'none'; frame-ancestors 'none'; sandbox");
    }

    #[test]
    fn loopback_names_addresses_and_configured_names_are_admitted() {
        let hosts = HostList::new(&["Otelephant".into(), "obs.example.com:443".into()]);
        for host in [
            "localhost",
            "localhost:4318",
            "app.localhost:4318",
            "127.0.0.1:4318",
            "10.1.2.3",
            "[::1]:4318",
            "[fe80::1]",
            "otelephant:4318",
            "OBS.example.com",
            "localhost.",
        ] {
            assert!(hosts.admits(host), "{host}");
        }
        for host in ["evil.example", "evil.example:4318", "localhost.evil.example", "127.0.0.1.nip.io", ""] {
            assert!(!hosts.admits(host), "{host}");
        }
        assert!(HostList::new(&["*".into()]).admits("evil.example"));
    }

    #[test]
    fn only_same_origin_browser_posts_change_sign_in() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, HeaderValue::from_static(v));
            }
            map
        };
        let host = "localhost:4318";
        assert!(same_origin(&headers(&[]), host), "curl and scripts send neither header");
        assert!(same_origin(
            &headers(&[("origin", "http://localhost:4318"), ("sec-fetch-site", "same-origin")]),
            host
        ));
        assert!(!same_origin(&headers(&[("origin", "https://evil.example")]), host));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")]), host));
        assert!(!same_origin(&headers(&[("origin", "null")]), host));
    }
}
