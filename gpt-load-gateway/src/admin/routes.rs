//! Every admin route, in one table. All but login, integration info and the OpenAPI document
//! require the admin key.
//!
//! Each handler's `#[utoipa::path]` carries its method and path, and `routes!` mounts it from
//! there, so the router and `/api/openapi.json` are built from the same table and cannot drift.

use axum::{Extension, Router, extract::DefaultBodyLimit, middleware};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    access_keys, auth, cluster, dashboard, error::AdminError, groups, integration, keys, logs, openapi,
    policies, settings, state::AdminState, tasks, usage, validation,
};

/// The largest request body the admin API reads (axum's default, named so that the answer to a
/// larger one can say it); the two task routes take uploads of any size.
pub(crate) const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The routes that need the admin key.
fn protected() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        // Groups
        .routes(routes!(groups::list_channel_types))
        .routes(routes!(groups::list_groups, groups::create_group))
        .routes(routes!(groups::list_groups_light))
        .routes(routes!(groups::list_config_options))
        .routes(routes!(groups::manage::reorder_groups))
        .routes(routes!(groups::manage::group_stats))
        .routes(routes!(groups::key_health::key_health))
        .routes(routes!(groups::manage::copy_group))
        .routes(routes!(groups::update_group, groups::delete_group))
        .routes(routes!(
            groups::sub_groups::list_sub_groups,
            groups::sub_groups::add_sub_groups
        ))
        .routes(routes!(groups::sub_groups::update_sub_group_weight))
        .routes(routes!(groups::sub_groups::remove_sub_group))
        .routes(routes!(groups::sub_groups::list_parent_aggregates))
        // Settings
        .routes(routes!(settings::list_settings, settings::update_settings))
        // Keys
        .routes(routes!(keys::list_keys))
        .routes(routes!(keys::export_keys))
        .routes(routes!(keys::add_keys))
        .routes(routes!(keys::delete_keys))
        .routes(routes!(keys::restore_keys))
        .routes(routes!(keys::restore_all_invalid))
        .routes(routes!(keys::clear_all_invalid))
        .routes(routes!(keys::clear_all))
        .routes(routes!(keys::update_notes))
        .routes(routes!(keys::update_status))
        .routes(routes!(keys::update_limits))
        .routes(routes!(tasks::test_multiple))
        // Tasks: imports and deletions of any size (a `.txt` upload included).
        .merge(
            OpenApiRouter::new()
                .routes(routes!(tasks::add_async))
                .routes(routes!(tasks::delete_async))
                .layer(DefaultBodyLimit::disable()),
        )
        .routes(routes!(tasks::validate_group))
        .routes(routes!(tasks::task_status))
        // Incremental validation
        .routes(routes!(validation::validate_one))
        .routes(routes!(validation::validate_all))
        .routes(routes!(validation::history))
        // Policies
        .routes(routes!(policies::list_policies, policies::create_policy))
        .routes(routes!(policies::test_rules))
        .routes(routes!(
            policies::get_policy,
            policies::update_policy,
            policies::delete_policy
        ))
        .routes(routes!(
            policies::list_group_policies,
            policies::set_group_policies
        ))
        // Logs
        .routes(routes!(logs::list_logs))
        .routes(routes!(logs::export_logs))
        // Dashboard
        .routes(routes!(
            access_keys::list_access_keys,
            access_keys::create_access_key
        ))
        .routes(routes!(
            access_keys::get_access_key,
            access_keys::update_access_key,
            access_keys::delete_access_key
        ))
        .routes(routes!(access_keys::rotate_access_key))
        .routes(routes!(access_keys::access_key_usage))
        .routes(routes!(usage::get_usage))
        .routes(routes!(usage::export_usage))
        .routes(routes!(dashboard::stats))
        .routes(routes!(dashboard::chart))
        .routes(routes!(dashboard::encryption_status))
        // Cluster
        .routes(routes!(cluster::cluster_status))
}

/// The answer to a path under `/api` that no route matches.
pub(crate) async fn unknown_route() -> AdminError {
    AdminError::NotFound("route")
}

/// The `/api` router (to be nested at `/api`). Every answer under `/api`, an unknown route or a
/// wrong method included, is JSON; all but login's own answers are the envelope.
pub(crate) fn router(state: AdminState) -> Router {
    let (router, doc) = OpenApiRouter::with_openapi(openapi::base())
        // Public
        .routes(routes!(auth::login))
        .routes(routes!(integration::integration_info))
        .routes(routes!(openapi::openapi_json))
        .merge(protected().route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin)))
        .split_for_parts();
    router
        // Added last so that it reaches every route: a wrong method is the envelope too, and
        // axum still adds the `Allow` header to it.
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .layer(Extension(openapi::Document::new(doc)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .fallback(unknown_route)
        .with_state(state)
}
