//! The GCE/GKE metadata server's access token endpoint, as the gateway's
//! Vertex AI `token_source: gce_metadata` reads it:
//!
//! `GET /computeMetadata/v1/instance/service-accounts/default/token` with
//! `Metadata-Flavor: Google` → `{"access_token": "<first --vertex-token>",
//! "expires_in": 3599, "token_type": "Bearer"}`. Without the header the
//! answer is a 403, as on GCE; other paths are 404, other methods 405.

use http::{header, HeaderValue, Method, StatusCode};

use crate::{json_value_response, text_response, Body, Ctx};

/// The token endpoint's path.
pub const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// Lifetime reported for the token (what GCE reports for a fresh one).
pub const EXPIRES_IN: u64 = 3599;

pub fn handle(ctx: Ctx<'_>) -> http::Response<Body> {
    if ctx.path != TOKEN_PATH {
        return text_response(StatusCode::NOT_FOUND, "Not Found\n");
    }
    if ctx.method != Method::GET {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let flavor_ok = ctx
        .headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    if !flavor_ok {
        return text_response(
            StatusCode::FORBIDDEN,
            "Missing required header \"Metadata-Flavor\": \"Google\"\n",
        );
    }
    let token = ctx
        .state
        .config
        .vertex_tokens
        .first()
        .cloned()
        .unwrap_or_default();
    let mut resp = json_value_response(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": token,
            "expires_in": EXPIRES_IN,
            "token_type": "Bearer",
        }),
    );
    resp.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    resp
}
