//! Google Gemini through the Gemini API (AI Studio,
//! `generativelanguage.googleapis.com`): an OpenAI chat request is
//! translated into `POST {base_path}/models/{model}:generateContent` (or
//! `:streamGenerateContent?alt=sse`) with the key in `x-goog-api-key`, and
//! the answer, whole or streamed, back into `chat.completion` /
//! `chat.completion.chunk`. Embeddings go to `:batchEmbedContents`.
//! Legacy completions are not served (`supports(Completion)` is false).
//!
//! [`super::vertex`] serves the same models through Vertex AI with this
//! translation: only the path, the credential and the embeddings API
//! differ.
//!
//! - [`request`]: OpenAI chat body → `GenerateContentRequest`.
//! - [`schema`]: JSON Schema → Gemini's OpenAPI subset (tools, JSON mode).
//! - [`response`]: a whole answer → `chat.completion`; ids, finish
//!   reasons, errors.
//! - [`stream`]: Gemini's SSE → `chat.completion.chunk` SSE, fed any split
//!   of the bytes.
//! - [`embed`]: embeddings for both APIs.
//!
//! Choices (each also explained where it is made):
//! - **Turns.** `user` → `user`, `assistant` → `model`; consecutive
//!   same-role messages are merged into one content (Gemini wants turns to
//!   alternate), tool results into the user turn, first in it and in the
//!   order of the calls they answer (Gemini pairs calls and results by
//!   position; clients may append parallel results as they complete).
//!   System/developer messages, wherever they are, become
//!   `systemInstruction` text parts in their order. Empty texts are
//!   skipped (Gemini rejects them); a conversation with no user or
//!   assistant content is a 400 from the gateway.
//! - **Content parts.** Text; `image_url` as a base64 data URL →
//!   `inlineData {mimeType, data}`, as an http(s) or `gs://` URL →
//!   `fileData {mimeType, fileUri}` with the MIME type guessed from the
//!   extension (png, jpeg, webp, gif, heic, heif, …), else `image/*`;
//!   `input_audio` → `inlineData` `audio/<format>`; `file` with `file_data`
//!   → `inlineData`, with a `file_id` that is a URI (Gemini File API,
//!   `gs://`) → `fileData` (MIME type from `file.format` or the extension).
//!   OpenAI file ids are a 400. Note: the Gemini API fetches only its own
//!   File API URIs and public http(s) URLs its URL fetching supports;
//!   Vertex also reads `gs://`.
//! - **Tools.** Function tools → one `tools[{functionDeclarations}]` with
//!   the parameters cut down to Gemini's schema subset ([`schema`] lists
//!   exactly what is kept, converted and dropped; a function without
//!   properties is declared without `parameters`). `tool_choice` auto →
//!   `AUTO`, none → `NONE`, required → `ANY`, a named function → `ANY` with
//!   `allowedFunctionNames: [name]`. Assistant `tool_calls` →
//!   `functionCall {name, args}` parts; `tool` messages →
//!   `functionResponse {name, response}`, the name found from the earlier
//!   call with that id (or the message's `name`), `response` the result
//!   when it is a JSON object, else `{"content": "<text>"}`.
//! - **Tool call ids.** Gemini's calls carry none: the gateway makes
//!   `call_` + 24 hex digits of SHA-256(response id / candidate / call
//!   index), identical streamed or whole ([`response::tool_call_id`]).
//!   No id is sent back to Gemini (it pairs results by name and order).
//! - **Thought signatures.** A function call's `thoughtSignature` goes to
//!   the client as the tool call's `extra_content.google.thought_signature`
//!   (the field Google's own OpenAI-compatible endpoint uses) and comes
//!   back from there on assistant messages. Gemini 3 models refuse a
//!   replayed call without it (400): for upstream models named
//!   `gemini-3…`, a model turn whose calls have no signature gets Google's
//!   documented `skip_thought_signature_validator` on its first call, so
//!   clients that rebuild their history keep working.
//! - **Parameters** → `generationConfig`: `temperature`, `top_p`
//!   (`topP`), `max_completion_tokens`/`max_tokens` (`maxOutputTokens`, no
//!   default: Gemini has its own), `stop` (`stopSequences`), `n`
//!   (`candidateCount`), `seed`, `presence_penalty`, `frequency_penalty`;
//!   `top_k` (`topK`) and `safety_settings` (top-level `safetySettings`)
//!   as extensions. `response_format` json_object → `responseMimeType:
//!   application/json`; json_schema → the same plus `responseSchema` (cut
//!   down, with `propertyOrdering` in the schema's order; `strict` has no
//!   equivalent and is ignored). Models that refuse JSON mode together with
//!   function declarations answer with their own 400, passed on.
//! - **Thinking.** `reasoning_effort` none/minimal/low/medium/high/xhigh →
//!   `thinkingConfig.thinkingBudget` 0/1024/2048/8192/16384/24576
//!   ([`request::effort_budget`]), or Anthropic's `thinking` object
//!   (`enabled` + `budget_tokens`, `disabled` → 0). Asking for thinking
//!   asks for the thought summaries too (`includeThoughts: true`); they come
//!   back as `reasoning_content`. Without either, the model's default.
//! - **Unsupported.** Unknown parameters follow the provider's
//!   `unknown_params` (default reject; `pass` copies them into the body,
//!   e.g. `cachedContent`). OpenAI parameters Gemini cannot honour here —
//!   `logprobs`, `top_logprobs`, `logit_bias`, `audio`, non-text
//!   `modalities`, `prediction`, `web_search_options`,
//!   `functions`/`function_call`, `verbosity`, `store: true`,
//!   `parallel_tool_calls: false` (Gemini cannot be kept to one call),
//!   `service_tier` other than auto/default — are a 400
//!   `unsupported_parameter` unless the model has `drop_unsupported_params`;
//!   their neutral values pass. `user`, `safety_identifier`, `metadata`,
//!   `prompt_cache_key` are accepted and ignored.
//! - **Answers.** Candidates → choices by `index`; text parts joined into
//!   `content` (null when there are none), thought parts (`thought: true`)
//!   into `reasoning_content`, function calls → `tool_calls` (`arguments`:
//!   the `args` object as compact JSON; its keys come out in alphabetical
//!   order, as Gemini's `args` is an unordered proto `Struct` anyway);
//!   other parts (inline images, code execution) are skipped. `id` is `chatcmpl-` +
//!   `responseId`, `model` is `modelVersion`; `created` is the host's clock
//!   ([`crate::providers::ResponseTranslator::set_created`]). Finish
//!   reasons: see [`response::finish_reason`]. Usage: `prompt_tokens` =
//!   `promptTokenCount`, `completion_tokens` = `candidatesTokenCount` +
//!   `thoughtsTokenCount`, `completion_tokens_details.reasoning_tokens` =
//!   `thoughtsTokenCount`, `prompt_tokens_details.cached_tokens` =
//!   `cachedContentTokenCount`, total = prompt + completion.
//! - **Blocked prompt** (`promptFeedback.blockReason`, no candidates): the
//!   OpenAI error `{"code": "content_filter"}` (type
//!   `invalid_request_error`, the block reason in the message), status 400
//!   (the glue holds the headers of whole answers until their body is
//!   read). In a stream it is an error event.
//! - **Errors.** Google's `{"error": {"code", "message", "status"}}` (or a
//!   one-element array of it): `INVALID_ARGUMENT`/`OUT_OF_RANGE` 400
//!   `invalid_request`, `FAILED_PRECONDITION` 400, `NOT_FOUND` 404,
//!   `RESOURCE_EXHAUSTED` 429 `rate_limit_exceeded`, `INTERNAL` 500,
//!   `UNAVAILABLE` 503, `DEADLINE_EXCEEDED` 504 `upstream_timeout`, the
//!   status kept; `UNAUTHENTICATED`/`PERMISSION_DENIED` (401/403) → 502
//!   `upstream_auth_failed` without Google's message, and so is the Gemini
//!   API's `400 API_KEY_INVALID` (the mapped status replaces the 400: the
//!   headers of error answers wait for their body).
//! - **Not mapped.** Grounding, code execution, URL context and other
//!   built-in tools; logprobs; safety ratings and citation metadata; tuned
//!   models (`tunedModels/…`) and Vertex endpoints of fine-tuned models.

mod embed;
mod request;
mod response;
mod schema;
mod stream;
mod types;

use super::openai_shaped;
use super::{
    KindDefaults, Provider, ProviderCommon, ResponseTranslator, UnknownParams, UpstreamRequest,
};
use crate::config::{ConfigError, Model, ModelKind};
use crate::error::ApiError;
use crate::request::{ClientRequest, Endpoint};

pub use embed::Api as EmbedApi;

pub const DEFAULTS: KindDefaults = KindDefaults {
    host: Some("generativelanguage.googleapis.com"),
    base_path: "/v1beta",
    auth_header: "x-goog-api-key",
    auth_prefix: "",
    unknown_params: UnknownParams::Reject,
};

#[derive(Debug)]
pub struct Gemini {
    common: ProviderCommon,
}

pub fn build(
    common: ProviderCommon,
    options: Option<&serde_json::Value>,
    path: &str,
) -> Result<Box<dyn Provider>, ConfigError> {
    openai_shaped::no_options(options, path)?;
    Ok(Box::new(Gemini { common }))
}

/// Percent-encode one path segment (a config value must never break the
/// path; Gemini's model names are plain).
pub fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The method suffix for a request: `:generateContent`,
/// `:streamGenerateContent?alt=sse`, or the embeddings method.
pub fn method(req: &ClientRequest<'_>, embed: EmbedApi) -> &'static str {
    match (req.endpoint, embed) {
        (Endpoint::Embeddings, EmbedApi::Batch) => ":batchEmbedContents",
        (Endpoint::Embeddings, EmbedApi::Predict) => ":predict",
        _ if req.stream => ":streamGenerateContent?alt=sse",
        _ => ":generateContent",
    }
}

/// The request body, shared by both APIs.
pub fn body(
    common: &ProviderCommon,
    req: &ClientRequest<'_>,
    model: &Model,
    embed: EmbedApi,
) -> Result<Vec<u8>, ApiError> {
    match req.endpoint {
        Endpoint::Embeddings => embed::body(embed, req, &model.upstream, common.unknown_params),
        _ => request::translate(req, model, common.unknown_params),
    }
}

/// Headers besides the path: the content type and, with `auth.from: env`,
/// the credential.
pub fn headers(common: &ProviderCommon) -> Vec<(String, String)> {
    let mut h = vec![("content-type".to_string(), "application/json".to_string())];
    h.extend(openai_shaped::credential_headers(common));
    h
}

/// The answer's translator, shared by both APIs.
pub fn translator(
    common: &ProviderCommon,
    req: &ClientRequest<'_>,
    embed: EmbedApi,
) -> Box<dyn ResponseTranslator> {
    match req.endpoint {
        Endpoint::Embeddings => Box::new(embed::EmbedTranslator::new(embed, req)),
        _ if req.stream => Box::new(stream::StreamTranslator::new(
            &common.name,
            req.include_usage,
        )),
        _ => Box::new(response::WholeTranslator::new(&common.name)),
    }
}

/// Google's error answers in OpenAI's shape.
pub fn map_error(common: &ProviderCommon, status: u16, body: &[u8]) -> ApiError {
    response::map_error(&common.name, status, body)
}

/// Chat and embeddings; no legacy completions.
pub fn supports(kind: ModelKind) -> bool {
    matches!(kind, ModelKind::Chat | ModelKind::Embedding)
}

impl Provider for Gemini {
    fn common(&self) -> &ProviderCommon {
        &self.common
    }

    fn supports(&self, kind: ModelKind) -> bool {
        supports(kind)
    }

    fn build_request(
        &self,
        req: &ClientRequest<'_>,
        model: &Model,
    ) -> Result<UpstreamRequest, ApiError> {
        let body = body(&self.common, req, model, EmbedApi::Batch)?;
        Ok(UpstreamRequest {
            path: format!(
                "{}/models/{}{}",
                self.common.base_path,
                segment(&model.upstream),
                method(req, EmbedApi::Batch)
            ),
            authority: self.common.host.clone(),
            headers: headers(&self.common),
            body,
        })
    }

    fn response_translator(&self, req: &ClientRequest<'_>) -> Box<dyn ResponseTranslator> {
        translator(&self.common, req, EmbedApi::Batch)
    }

    fn response_status(&self, status: u16) -> u16 {
        response::client_status(status)
    }

    fn map_error(&self, status: u16, body: &[u8]) -> ApiError {
        map_error(&self.common, status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg() -> Config {
        let doc = r#"{"providers":[{"name":"g","kind":"gemini","cluster":"gemini"},
              {"name":"g-env","kind":"gemini","cluster":"gemini","auth":{"from":"env","env":"K"}}],
            "models":[{"name":"c","provider":"g","upstream_model":"gemini-2.5-flash"},
                      {"name":"d","provider":"g-env"},
                      {"name":"e","provider":"g","kind":"embedding","upstream_model":"gemini-embedding-001"}]}"#;
        Config::parse(doc.as_bytes(), &|n| {
            (n == "K").then(|| "AIza-k".to_string())
        })
        .unwrap()
    }

    #[test]
    fn defaults_paths_and_headers() {
        let c = cfg();
        let p = c.provider(&c.models[0]);
        assert_eq!(p.common().host, "generativelanguage.googleapis.com");
        assert!(p.supports(ModelKind::Chat) && p.supports(ModelKind::Embedding));
        assert!(!p.supports(ModelKind::Completion));
        let body = br#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#;
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body).unwrap();
        let up = p.build_request(&req, &c.models[0]).unwrap();
        assert_eq!(up.path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert!(!up.headers.iter().any(|(k, _)| k == "x-goog-api-key"));
        let p = c.provider(&c.models[1]);
        let up = p.build_request(&req, &c.models[1]).unwrap();
        assert!(up
            .headers
            .contains(&("x-goog-api-key".into(), "AIza-k".into())));
        let body = br#"{"model":"c","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let req = ClientRequest::parse(Endpoint::ChatCompletions, body).unwrap();
        let up = c
            .provider(&c.models[0])
            .build_request(&req, &c.models[0])
            .unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let req =
            ClientRequest::parse(Endpoint::Embeddings, br#"{"model":"e","input":"x"}"#).unwrap();
        let up = c
            .provider(&c.models[2])
            .build_request(&req, &c.models[2])
            .unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        );
    }

    #[test]
    fn completion_models_and_options_rejected() {
        let doc = r#"{"providers":[{"name":"g","kind":"gemini","cluster":"gemini"}],
            "models":[{"name":"c","provider":"g","kind":"completion"}]}"#;
        let e = Config::parse(doc.as_bytes(), &|_| None).unwrap_err();
        assert_eq!(e.field, "models[0].kind");
        let doc = r#"{"providers":[{"name":"g","kind":"gemini","cluster":"gemini","options":{"x":1}}],
            "models":[{"name":"c","provider":"g"}]}"#;
        let e = Config::parse(doc.as_bytes(), &|_| None).unwrap_err();
        assert_eq!(e.field, "providers[0].options");
    }

    #[test]
    fn errors_keep_their_status() {
        let c = cfg();
        let p = c.provider(&c.models[0]);
        assert_eq!(p.response_status(401), 502);
        assert_eq!(p.response_status(429), 429);
        let e = p.map_error(
            429,
            br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (429, Some("rate_limit_exceeded"))
        );
    }
}
