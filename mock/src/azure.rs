//! Azure OpenAI: `/openai/deployments/{deployment}/{chat/completions |
//! completions | embeddings}?api-version=YYYY-MM-DD[-preview]`.
//!
//! Wraps the OpenAI logic with Azure's routing, `api-key` auth, Azure error
//! bodies (`{"error":{"code","message"}}`), deployment-based models and the
//! content-filter annotations (`prompt_filter_results`,
//! `content_filter_results`) the real service adds.

use std::time::Instant;

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::behavior::{html_response, Behavior};
use crate::body::Body;
use crate::openai::{self, set, ApiError, Dialect};
use crate::{json_value_response, text, Ctx, Provider, State};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Chat,
    Completions,
    Embeddings,
}

impl Op {
    /// Azure's operation name in its messages.
    fn operation(self) -> &'static str {
        match self {
            Op::Chat => "chatCompletion",
            Op::Completions => "completion",
            Op::Embeddings => "embeddings",
        }
    }

    fn rate_limit_name(self) -> &'static str {
        match self {
            Op::Chat => "ChatCompletions_Create",
            Op::Completions => "Completions_Create",
            Op::Embeddings => "Embeddings_Create",
        }
    }
}

/// What a deployment serves, from its name: `embedding` → embeddings,
/// `instruct` → completions, anything else → chat.
fn deployment_op(name: &str) -> Op {
    if name.contains("embedding") {
        Op::Embeddings
    } else if name.contains("instruct") {
        Op::Completions
    } else {
        Op::Chat
    }
}

/// An Azure-shaped error: `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_value_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn resource_not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "404", "Resource not found")
}

/// `YYYY-MM-DD` or `YYYY-MM-DD-preview`.
pub fn valid_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Per-choice content filter annotations (everything "safe").
pub fn choice_filter_results() -> Value {
    json!({
        "hate": {"filtered": false, "severity": "safe"},
        "protected_material_code": {"filtered": false, "detected": false},
        "protected_material_text": {"filtered": false, "detected": false},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"},
    })
}

/// Prompt content filter annotations for `prompts` prompts.
pub fn prompt_filter_results(prompts: usize) -> Value {
    Value::Array(
        (0..prompts.max(1))
            .map(|i| {
                json!({"prompt_index": i, "content_filter_results": {
                    "hate": {"filtered": false, "severity": "safe"},
                    "jailbreak": {"filtered": false, "detected": false},
                    "self_harm": {"filtered": false, "severity": "safe"},
                    "sexual": {"filtered": false, "severity": "safe"},
                    "violence": {"filtered": false, "severity": "safe"},
                }})
            })
            .collect(),
    )
}

fn authorized(state: &State, ctx: &Ctx<'_>) -> bool {
    let keys = &state.config.azure_keys;
    if let Some(k) = ctx.headers.get("api-key").and_then(|v| v.to_str().ok()) {
        if keys.iter().any(|x| x == k) {
            return true;
        }
    }
    // Entra ID bearer token stand-in.
    matches!(openai::bearer(ctx.headers), Some(t) if keys.iter().any(|x| x == t))
}

fn fault(status: u16, op: Op, api_version: &str) -> Response<Body> {
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        401 => error(st, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."),
        403 => error(st, "403", "Access denied due to Virtual Network/Firewall rules."),
        404 => error(st, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."),
        408 => error(st, "Timeout", "The operation was timeout."),
        429 => error(st, "429", &format!("Requests to the {} Operation under Azure OpenAI API version {api_version} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 60 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.", op.rate_limit_name())),
        503 => error(st, "ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
        // Azure passes the OpenAI backend's error through for the rest.
        _ => openai::fault_error(status, "").into_response(Provider::Azure),
    }
}

fn throttle(secs: f64, op: Op, api_version: &str) -> Response<Body> {
    let (ra, ra_ms) = openai::retry_after_values(secs);
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        "429",
        &format!("Requests to the {} Operation under Azure OpenAI API version {api_version} have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after {ra} second{}. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.", op.rate_limit_name(), if ra == "1" { "" } else { "s" }),
    );
    let h = resp.headers_mut();
    set(h, "retry-after", &ra);
    set(h, "retry-after-ms", &ra_ms);
    set(h, "x-ratelimit-remaining-requests", "0");
    set(h, "x-ratelimit-remaining-tokens", "0");
    resp
}

fn add_headers(
    state: &State,
    mut resp: Response<Body>,
    deployment: &str,
    started: Instant,
) -> Response<Body> {
    let h = resp.headers_mut();
    let id = text::uuid(state.unique());
    set(h, "apim-request-id", &id);
    set(h, "x-request-id", &id);
    set(h, "x-ms-region", "East US");
    set(h, "x-ms-deployment-name", deployment);
    set(h, "x-ms-rai-invoked", "true");
    set(h, "azureml-model-session", "d001-20240101000000");
    set(
        h,
        "x-envoy-upstream-service-time",
        &started.elapsed().as_millis().to_string(),
    );
    if !h.contains_key("x-ratelimit-remaining-requests") {
        set(h, "x-ratelimit-remaining-requests", "9999");
        set(h, "x-ratelimit-remaining-tokens", "999000");
    }
    resp
}

/// Serves a request below `/openai`.
pub async fn handle(ctx: Ctx<'_>) -> Response<Body> {
    let started = Instant::now();
    let Some(rest) = ctx.path.strip_prefix("/openai/deployments/") else {
        return resource_not_found();
    };
    let Some((deployment, op_path)) = rest.split_once('/') else {
        return resource_not_found();
    };
    let op = match op_path {
        "chat/completions" => Op::Chat,
        "completions" => Op::Completions,
        "embeddings" => Op::Embeddings,
        _ => return resource_not_found(),
    };
    if deployment.is_empty() {
        return resource_not_found();
    }
    if *ctx.method != Method::POST {
        return openai::method_not_allowed(Provider::Azure, ctx.method, ctx.path, Method::POST);
    }
    let json = openai::parse_body(ctx.body);
    let mut beh: Behavior = ctx.behavior(Some(deployment));
    if let Some(v) = &json {
        if Behavior::may_contain_marker(ctx.body) {
            beh.apply_markers(&openai::request_text(v));
        }
    }
    if let Some(d) = beh.stall {
        tokio::time::sleep(d).await;
    }
    if let Some(status) = beh.html {
        return html_response(status);
    }
    let api_version = match ctx.query_param("api-version") {
        Some(v) if valid_api_version(v) => v,
        _ => return resource_not_found(),
    };
    let state = ctx.state;
    let resp = 'resp: {
        if !authorized(state, &ctx) {
            break 'resp error(
                StatusCode::UNAUTHORIZED,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
            );
        }
        if !state
            .config
            .azure_deployments
            .iter()
            .any(|d| d == deployment)
        {
            break 'resp error(
                StatusCode::NOT_FOUND,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
            );
        }
        if deployment_op(deployment) != op {
            break 'resp error(
                StatusCode::BAD_REQUEST,
                "OperationNotSupported",
                &format!("The {} operation does not work with the specified model, {deployment}. Please choose different model and try again. You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.", op.operation()),
            );
        }
        if let Some(secs) = beh.throttle {
            break 'resp throttle(secs, op, api_version);
        }
        if let Some(status) = beh.fail {
            break 'resp fault(status, op, api_version);
        }
        let d = Dialect {
            provider: Provider::Azure,
            deployment: Some(deployment),
        };
        let json = json.as_ref();
        let result = match op {
            Op::Chat => openai::chat(&d, json, &beh),
            Op::Completions => openai::completions(&d, json, &beh),
            Op::Embeddings => openai::embeddings(&d, json, &beh),
        };
        result.unwrap_or_else(|e: ApiError| e.into_response(Provider::Azure))
    };
    let resp = add_headers(state, resp, deployment, started);
    beh.shape(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        assert!(valid_api_version("2024-10-21"));
        assert!(valid_api_version("2025-01-01-preview"));
        assert!(!valid_api_version("2024-1-21"));
        assert!(!valid_api_version("latest"));
        assert!(!valid_api_version(""));
    }

    #[test]
    fn deployment_ops() {
        assert_eq!(deployment_op("text-embedding-3-small"), Op::Embeddings);
        assert_eq!(deployment_op("gpt-35-turbo-instruct"), Op::Completions);
        assert_eq!(deployment_op("gpt-4o"), Op::Chat);
    }
}
