use http::StatusCode;

/// What went wrong, in few enough variants to label metrics and logs.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No proxy key, or one that this group does not accept. `401`
    Unauthorized,
    /// The URL names a group that does not exist. `404`
    UnknownGroup,
    /// The caller is known but may not do this: an access key used on a group or for a model it
    /// is not allowed. `403`
    Forbidden,
    /// Too many requests in flight; try again after `Retry-After`. `429`
    Overloaded,
    /// A rate limit of the gateway's own (a key's or a group's requests per minute, per day, or
    /// concurrency) is reached; try again after `Retry-After`. The limit is named in
    /// [`LIMIT_HEADER`](super::LIMIT_HEADER). `429`
    RateLimited,
    /// The request body is larger than the configured cap. `413`
    BodyTooLarge,
    /// The request is malformed or asks for something the group does not offer. `400`
    InvalidRequest,
    /// Reading the client's request body failed (usually the client went away). `400`
    ClientBody,
    /// The path to forward has a `.` or `..` segment (in any spelling an upstream might decode),
    /// which could leave the group's base path. `400`
    InvalidPath,
    /// Buffering this body would pass the budget for request bodies held in memory across all
    /// requests; try again after `Retry-After`. `503`
    BodyBudgetExhausted,
    /// Every key of the group is blacklisted, cooling down, disabled or already tried. `503`
    NoKeyAvailable,
    /// The group has no upstream with a weight above zero. `502`
    NoUpstream,
    /// The upstream could not be reached or broke the connection. `502`
    Upstream,
    /// The upstream did not answer in time. `504`
    UpstreamTimeout,
    /// A bug or a misassembled stack. `500`
    Internal,
}

impl ErrorKind {
    /// The HTTP status a client receives for this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UnknownGroup => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Overloaded | Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidRequest | Self::ClientBody | Self::InvalidPath => StatusCode::BAD_REQUEST,
            Self::NoKeyAvailable | Self::BodyBudgetExhausted => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoUpstream | Self::Upstream => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable snake_case name, used as the error `code` and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::UnknownGroup => "unknown_group",
            Self::Forbidden => "permission_denied",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limit_exceeded",
            Self::BodyTooLarge => "body_too_large",
            Self::InvalidRequest => "invalid_request",
            Self::ClientBody => "client_body",
            Self::InvalidPath => "invalid_path",
            Self::BodyBudgetExhausted => "body_budget_exhausted",
            Self::NoKeyAvailable => "no_keys_available",
            Self::NoUpstream => "no_upstream",
            Self::Upstream => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Internal => "internal_error",
        }
    }
}
