//! What keeps a browser on another site from using the HTTP API of a gateway it can reach
//! (the one on the user's own machine, typically):
//! - **DNS rebinding**: a page of `evil.example` whose name is made to resolve to
//!   127.0.0.1 reaches the gateway with `Host: evil.example`. When the gateway listens on a
//!   loopback address, only loopback host names are served (plus `--http-allowed-hosts`);
//!   bound to another address (containers, Kubernetes) any host is served unless that list
//!   is given.
//! - **Cross-site requests without a preflight**: a form or a `text/plain` fetch from
//!   another origin is sent without asking first. Requests that change state (anything but
//!   GET, HEAD, OPTIONS) are refused when the browser says they come from another origin
//!   (`Origin` other than this host, or `Sec-Fetch-Site: cross-site`). Clients that are not
//!   browsers send neither header and are not affected.
//! - **CORS** is off unless `--http-cors-origins` names origins: their pages may call the
//!   API (preflights are answered, responses carry `Access-Control-Allow-Origin`, and their
//!   state-changing requests are not refused as cross-site); the API key is still needed.
//! - **Bodies declared too large** (`Content-Length` over the route's limit) get 413 at
//!   once, before any of the body is read or waited for.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{header, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use mmc_runtime::auth::{AuthError, Scope};

use super::{error::ApiError, openai::HttpState};

/// Which `Host` names are served.
#[derive(Clone, Debug)]
pub enum AllowedHosts {
    /// Any (the listener is not on loopback and no list was given).
    Any,
    /// Loopback names and these.
    LoopbackAnd(Vec<String>),
}

impl AllowedHosts {
    /// For a listener on `listen` with the operator's extra names `extra`.
    pub fn for_listener(listen: IpAddr, extra: &[String]) -> Self {
        if listen.is_loopback() || !extra.is_empty() {
            AllowedHosts::LoopbackAnd(extra.iter().map(|h| h.to_ascii_lowercase()).collect())
        } else {
            AllowedHosts::Any
        }
    }

    fn allows(&self, host: &str) -> bool {
        match self {
            AllowedHosts::Any => true,
            AllowedHosts::LoopbackAnd(extra) => is_loopback(host) || extra.iter().any(|h| h.eq_ignore_ascii_case(host)),
        }
    }
}

/// The host name of a `Host` value or of an origin's authority (`name:port`, `[::1]:port`).
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => authority,
    }
}

fn is_loopback(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn forbidden(code: &'static str, message: &str) -> Response {
    ApiError { status: StatusCode::FORBIDDEN, kind: "permission_error", code: Some(code), param: None, message: message.into() }.into_response()
}

/// The middleware (see the module docs).
pub async fn guard(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !state.allowed_hosts.allows(host_name(host)) {
        return forbidden("host_not_allowed", "this server does not answer to that host name (see --http-allowed-hosts)");
    }
    // An origin the operator allowed (CORS): its preflight is answered here, before keys
    // (a preflight carries none), and its responses say it may read them.
    let cors_origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| state.cors_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(o)))
        .and_then(|o| axum::http::HeaderValue::from_str(o).ok());
    if let Some(origin) = &cors_origin {
        if request.method() == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            return (
                StatusCode::NO_CONTENT,
                [
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
                    (header::ACCESS_CONTROL_ALLOW_METHODS, axum::http::HeaderValue::from_static("GET, POST, PATCH, DELETE")),
                    (header::ACCESS_CONTROL_ALLOW_HEADERS, axum::http::HeaderValue::from_static("authorization, content-type")),
                    (header::ACCESS_CONTROL_MAX_AGE, axum::http::HeaderValue::from_static("600")),
                    (header::VARY, axum::http::HeaderValue::from_static("Origin")),
                ],
            )
                .into_response();
        }
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let limit = super::body_limit(request.method(), request.uri().path(), state.max_upload_bytes);
    if let Some(length) = declared.filter(|length| *length > limit) {
        let message = format!("the body is {length} bytes; this route takes at most {limit}");
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            code: Some("payload_too_large"),
            param: None,
            message,
        }
        .into_response();
    }
    // API keys, as on the gRPC port: the API needs one; the web UI's pages and the
    // document do not (the UI's scripts send the key the user gives). Thumbnails do not
    // either: an `<img>` cannot send a header, and their ids are 128-bit content hashes,
    // known only to whoever indexed or found the image.
    let path = request.uri().path();
    if let Some(keys) = &state.api_keys {
        let open = !path.starts_with("/v1/") || (request.method() == Method::GET && path.ends_with("/thumbnail"));
        if !open {
            let needed = scope_of_route(request.method(), path);
            if let Err(e) = keys.authorize(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()), needed) {
                return auth_refusal(e);
            }
        }
    }
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        let foreign_origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_some_and(|origin| {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            !authority.eq_ignore_ascii_case(host)
        });
        if (cross_site || foreign_origin) && cors_origin.is_none() {
            return forbidden("cross_origin", "requests from another site's pages are not accepted");
        }
    }
    let mut response = next.run(request).await;
    if let Some(origin) = cors_origin {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        response.headers_mut().append(header::VARY, axum::http::HeaderValue::from_static("Origin"));
    }
    response
}

/// The API-key scope an HTTP route needs: the scope of the gRPC method it stands for
/// (`mmc_runtime::auth::scope_of_method`). Deleting is admin; indexing, summarizing a
/// meeting (it is stored) and review edits are write; reading, searching, describing,
/// asking and the OpenAI-compatible computations are read.
pub fn scope_of_route(method: &Method, path: &str) -> Scope {
    match *method {
        Method::DELETE => Scope::Admin,
        Method::GET | Method::HEAD | Method::OPTIONS => Scope::Read,
        Method::PATCH | Method::PUT => Scope::Write,
        _ => {
            let stores = path == "/v1/images"
                || path == "/v1/meetings"
                || ["/approve", "/review", "/decisions", "/action_items"].iter().any(|tail| path.ends_with(tail));
            if stores {
                Scope::Write
            } else {
                Scope::Read
            }
        }
    }
}

/// 401 (no or unknown key), 403 (scope too small) or 429 with `Retry-After`.
fn auth_refusal(e: AuthError) -> Response {
    let (status, code) = match e {
        AuthError::Missing | AuthError::Invalid => (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        AuthError::Forbidden { .. } => (StatusCode::FORBIDDEN, "insufficient_scope"),
        AuthError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
    };
    let kind = if status == StatusCode::TOO_MANY_REQUESTS { "rate_limit_error" } else { "invalid_request_error" };
    let mut response = ApiError { status, kind, code: Some(code), param: None, message: e.to_string() }.into_response();
    match e {
        AuthError::Missing | AuthError::Invalid => {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        AuthError::RateLimited { retry_after_s } => {
            response.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from(retry_after_s));
        }
        AuthError::Forbidden { .. } => {}
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listeners_serve_loopback_names_only() {
        let local = AllowedHosts::for_listener("127.0.0.1".parse().unwrap(), &[]);
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST", "app.localhost:1"] {
            assert!(local.allows(host_name(host)), "{host}");
        }
        for host in ["evil.example:8080", "evil.example", "10.0.0.1:8080", ""] {
            assert!(!local.allows(host_name(host)), "{host}");
        }
        let listed = AllowedHosts::for_listener("127.0.0.1".parse().unwrap(), &["mmc.lan".into()]);
        assert!(listed.allows(host_name("MMC.lan:8080")));
        let open = AllowedHosts::for_listener("0.0.0.0".parse().unwrap(), &[]);
        assert!(open.allows(host_name("gateway.default.svc:8080")));
    }
}
