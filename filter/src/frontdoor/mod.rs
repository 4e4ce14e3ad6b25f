//! Front doors: client APIs the gateway serves besides OpenAI's.
//!
//! A front door takes a request in its client API's shape, sends it to the
//! model's provider — as is when the provider speaks that API, otherwise
//! translated into the OpenAI chat shape and handed to the provider's own
//! `build_request` — and gives the answer and every error back in the
//! client API's shape.
//!
//! - [`anthropic_messages`]: Anthropic's Messages API (`POST {prefix}/messages`,
//!   `POST {prefix}/messages/count_tokens`).

pub mod anthropic_messages;

use crate::error::ApiError;
use crate::gateway::Reply;
use crate::request::Endpoint;

/// The shape errors take on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"message","type","param","code"}}`.
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`.
    Anthropic,
}

impl ErrorShape {
    pub fn for_endpoint(endpoint: Endpoint) -> Self {
        if endpoint.is_anthropic() {
            ErrorShape::Anthropic
        } else {
            ErrorShape::OpenAi
        }
    }

    /// The JSON body of `e` in this shape.
    pub fn body(self, e: &ApiError) -> Vec<u8> {
        match self {
            ErrorShape::OpenAi => e.body(),
            ErrorShape::Anthropic => anthropic_messages::error_body(e),
        }
    }

    /// A local reply for `e` in this shape (status and headers as the
    /// OpenAI routes give them, e.g. `retry-after`).
    pub fn reply(self, e: ApiError) -> Reply {
        Reply {
            status: e.status,
            headers: e.headers(),
            body: self.body(&e),
        }
    }
}
