//! Every admin route, in one table. All but login require the admin key.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{delete, get, post, put},
};

use super::tasks;
use super::{auth, groups, keys, settings, state::AdminState};
use super::{dashboard, integration, logs};

/// The `/api` router.
pub(crate) fn router(state: AdminState) -> Router {
    let protected = Router::new()
        // Groups
        .route("/channel-types", get(groups::list_channel_types))
        .route("/groups", get(groups::list_groups).post(groups::create_group))
        .route("/groups/list", get(groups::list_groups_light))
        .route("/groups/config-options", get(groups::list_config_options))
        .route("/groups/reorder", put(groups::reorder_groups))
        .route("/groups/{id}/stats", get(groups::group_stats))
        .route("/groups/{id}/copy", post(groups::copy_group))
        .route(
            "/groups/{id}",
            put(groups::update_group).delete(groups::delete_group),
        )
        .route(
            "/groups/{id}/sub-groups",
            get(groups::list_sub_groups).post(groups::add_sub_groups),
        )
        .route(
            "/groups/{id}/sub-groups/{sub_group_id}/weight",
            put(groups::update_sub_group_weight),
        )
        .route(
            "/groups/{id}/sub-groups/{sub_group_id}",
            delete(groups::remove_sub_group),
        )
        .route(
            "/groups/{id}/parent-aggregate-groups",
            get(groups::list_parent_aggregates),
        )
        // Settings
        .route(
            "/settings",
            get(settings::list_settings).put(settings::update_settings),
        )
        // Keys
        .route("/keys", get(keys::list_keys))
        .route("/keys/export", get(keys::export_keys))
        .route("/keys/add-multiple", post(keys::add_keys))
        .route("/keys/delete-multiple", post(keys::delete_keys))
        .route("/keys/restore-multiple", post(keys::restore_keys))
        .route("/keys/restore-all-invalid", post(keys::restore_all_invalid))
        .route("/keys/clear-all-invalid", post(keys::clear_all_invalid))
        .route("/keys/clear-all", post(keys::clear_all))
        .route("/keys/{id}/notes", put(keys::update_notes))
        .route("/keys/{id}/status", put(keys::update_status))
        .route(
            "/keys/add-async",
            post(tasks::add_async).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/keys/delete-async",
            post(tasks::delete_async).layer(DefaultBodyLimit::disable()),
        )
        .route("/keys/validate-group", post(tasks::validate_group))
        .route("/keys/test-multiple", post(tasks::test_multiple))
        .route("/tasks/status", get(tasks::task_status))
        // Logs
        .route("/logs", get(logs::list_logs))
        .route("/logs/export", get(logs::export_logs))
        // Dashboard
        .route("/dashboard/stats", get(dashboard::stats))
        .route("/dashboard/chart", get(dashboard::chart))
        .route("/dashboard/encryption-status", get(dashboard::encryption_status))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin));
    Router::new()
        // Public
        .route("/auth/login", post(auth::login))
        .route("/integration/info", get(integration::integration_info))
        .merge(protected)
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"error": "Not Found"})),
            )
        })
        .with_state(state)
}
