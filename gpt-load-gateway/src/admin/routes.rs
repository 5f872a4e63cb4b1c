//! Every admin route, in one table. All but login require the admin key.

use axum::{
    Router, middleware,
    routing::{get, post, put},
};

use super::{auth, groups, settings, state::AdminState};

/// The `/api` router.
pub(crate) fn router(state: AdminState) -> Router {
    let protected = Router::new()
        // Groups
        .route("/channel-types", get(groups::list_channel_types))
        .route("/groups", get(groups::list_groups).post(groups::create_group))
        .route("/groups/list", get(groups::list_groups_light))
        .route("/groups/config-options", get(groups::list_config_options))
        .route(
            "/groups/{id}",
            put(groups::update_group).delete(groups::delete_group),
        )
        // Settings
        .route(
            "/settings",
            get(settings::list_settings).put(settings::update_settings),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin));
    Router::new()
        // Public
        .route("/auth/login", post(auth::login))
        .merge(protected)
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"error": "Not Found"})),
            )
        })
        .with_state(state)
}
