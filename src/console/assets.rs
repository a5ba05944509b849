//! The console's page, script and style sheet, embedded in the binary at build time (from
//! `console/` at the repository root; nothing is fetched from elsewhere), and the security
//! headers of every console response: a Content-Security-Policy that allows only this origin's
//! own scripts and styles (no inline script or style, no framing), `X-Frame-Options: DENY`,
//! `nosniff`, no referrer, `Cache-Control: no-store`.

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpResponse};
use ws_actors::ErrorCode;

use super::security_headers;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;

/// The policy of the pages: this origin's scripts, styles, images and fetches (WebSockets to
/// this host included, for the "try it" page), nothing inline, no plugins, no framing.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";
/// The policy of API answers: JSON, nothing to run or frame.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("../../console/index.html");
const TRY: &str = include_str!("../../console/try.html");

/// The files under `/console/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../console/console.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/api.js"),
    },
    Asset {
        name: "views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/views.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/dom.js"),
    },
    Asset {
        name: "try.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/try.js"),
    },
];

/// Security headers of the pages and assets.
pub(super) fn page_headers() -> DefaultHeaders {
    security_headers(PAGE_CSP)
}

/// Security headers of the admin API.
pub(super) fn api_headers() -> DefaultHeaders {
    security_headers(API_CSP)
}

fn html(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// `GET /console`: the console.
pub(super) async fn index() -> HttpResponse {
    html(INDEX)
}

/// `GET /console/try`: a page that opens a WebSocket and shows what arrives.
pub(super) async fn try_page() -> HttpResponse {
    html(TRY)
}

/// `GET /console/assets/{name}`.
pub(super) async fn asset(
    name: web::Path<String>,
    cid: CorrelationId,
) -> Result<HttpResponse, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == name.as_str())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such console asset", &cid))?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .body(asset.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages run no inline script or style (the policy would block them) and load only
    /// files that are embedded.
    #[test]
    fn pages_reference_only_embedded_assets_and_nothing_inline() {
        for page in [INDEX, TRY] {
            assert!(!page.contains("<script>"), "inline script");
            assert!(!page.contains("style="), "inline style");
            assert!(!page.contains("<style"), "inline style sheet");
            assert!(
                !page.contains("http://") && !page.contains("https://"),
                "external URL"
            );
            for reference in page.split("/console/assets/").skip(1) {
                let name = reference.split('"').next().unwrap_or_default();
                assert!(ASSETS.iter().any(|a| a.name == name), "{name} not embedded");
            }
        }
        for asset in ASSETS {
            assert!(
                !asset.body.contains("http://") && !asset.body.contains("https://"),
                "{}",
                asset.name
            );
        }
    }
}
