//! Responses the proxy makes up itself: error pages, redirects and ACME challenge answers.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// A small HTML page for `status` explaining what happened.
pub(crate) fn error_page(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1><p>{detail}</p><hr><p>haloy</p></body></html>\n",
        code = status.as_u16(),
        detail = escape(detail),
    );
    let mut resp = Response::new(ProxyBody::local(Bytes::from(html)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// 301 to `location`.
pub(crate) fn redirect(location: &str) -> Response<ProxyBody> {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut resp = Response::new(ProxyBody::local(Bytes::new()));
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            resp.headers_mut().insert(header::LOCATION, value);
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            resp
        }
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "The request target cannot be redirected.",
        ),
    }
}

/// 200 text/plain with the ACME key authorization.
pub(crate) fn challenge(key_authorization: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(Bytes::from(key_authorization)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
