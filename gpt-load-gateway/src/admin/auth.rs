//! Admin authentication: `AUTH_KEY` from the same four carriers as the proxy (`?key=`,
//! `Authorization: Bearer`, `x-api-key`, `x-goog-api-key`), compared in constant time, with
//! repeated failures from one client address throttled (gpt-load has no throttling).

use std::net::{IpAddr, SocketAddr};

use axum::{
    Json,
    extract::{ConnectInfo, Request, State, rejection::BytesRejection},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::{
    error::AdminError,
    state::{Admin, AdminState},
};
use crate::proxy::client_ip::client_ip;

fn peer_of(state: &AdminState, req: &Request) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    client_ip(peer, req.headers(), &state.trusted_proxies)
}

fn matches(state: &AdminState, presented: &str) -> bool {
    bool::from(state.auth_key.expose().as_bytes().ct_eq(presented.as_bytes()))
}

/// Rejects requests without the admin key.
pub(crate) async fn require_admin(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let ip = peer_of(&state, &req);
    if let Some(wait) = state.throttle.blocked(ip) {
        return AdminError::Throttled(wait).into_response();
    }
    let ok = gpt_load_tower::auth::presented_key(&req).is_some_and(|key| matches(&state, &key));
    if !ok {
        state.throttle.failed(ip);
        return AdminError::Unauthorized.into_response();
    }
    state.throttle.succeeded(ip);
    next.run(req).await
}

/// The body of `POST /api/auth/login`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    auth_key: String,
}

/// The answer of `POST /api/auth/login` (gpt-load's own shape, not the envelope).
#[derive(Serialize, ToSchema)]
pub(crate) struct LoginResponse {
    success: bool,
    message: &'static str,
}

fn login_answer(status: StatusCode, success: bool, message: &'static str) -> Response {
    (status, Json(LoginResponse { success, message })).into_response()
}

/// Checks the admin key; the console then sends it on every request.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, body = LoginResponse),
        (status = 401, body = LoginResponse),
    ))]
pub(crate) async fn login(
    Admin { state, lang }: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let ip = client_ip(peer.ip(), &headers, &state.trusted_proxies);
    if let Some(wait) = state.throttle.blocked(ip) {
        return AdminError::Throttled(wait).into_response();
    }
    // Answers gpt-load has no counterpart for (413 here, 429 above) are the envelope.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return AdminError::from(rejection).into_response(),
    };
    let Ok(request) = serde_json::from_slice::<LoginRequest>(&body) else {
        let message = super::lang::text(lang, "invalid request body", "请求体无效");
        return login_answer(StatusCode::BAD_REQUEST, false, message);
    };
    if matches(&state, &request.auth_key) {
        state.throttle.succeeded(ip);
        let message = super::lang::text(lang, "Authentication successful", "认证成功");
        login_answer(StatusCode::OK, true, message)
    } else {
        state.throttle.failed(ip);
        let message = super::lang::text(lang, "Authentication failed", "认证失败");
        login_answer(StatusCode::UNAUTHORIZED, false, message)
    }
}
