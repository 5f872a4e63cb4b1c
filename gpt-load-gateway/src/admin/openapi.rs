//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the admin API.
//!
//! Nothing here lists routes: `routes.rs` mounts every handler through its `#[utoipa::path]`
//! annotation, and the document is what that table collected, with the request and response
//! types the handlers name. This module adds what is common to all of them: the `/api` prefix,
//! the admin-key security schemes and the error envelope (with its list of invalid fields).

use std::sync::Arc;

use axum::{
    Extension,
    body::Bytes,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, ContentBuilder, RefOr, ResponseBuilder,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use super::{envelope::Failure, integration};

/// The parts of the document that are not routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "gpt-load-rs admin API",
        description = "The admin REST API, wire-compatible with gpt-load 1.4: every answer is \
            `{code:0,message,data}` on success and `{code:\"ERR_CODE\",message}` on failure; \
            a `VALIDATION_FAILED` failure also lists every invalid field in \
            `errors: [{field,message}]`. \
            Send the admin key (`AUTH_KEY`) as `Authorization: Bearer`, `X-Api-Key`, \
            `X-Goog-Api-Key` or `?key=`. Deviations from gpt-load are listed in docs/API.md.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(integration::group_integration_info),
    components(schemas(Failure)),
    modifiers(&AdminKey),
    security(("bearer" = []), ("x_api_key" = []), ("x_goog_api_key" = []), ("query_key" = [])),
    tags(
        (name = "auth", description = "Checking the admin key"),
        (name = "groups", description = "Groups, aggregate groups and their members"),
        (name = "keys", description = "A group's upstream keys"),
        (name = "tasks", description = "The one global background task"),
        (name = "validation", description = "Incremental validation of a group's keys"),
        (name = "policies", description = "Failure rules, reusable and attached to groups"),
        (name = "logs", description = "Request logs"),
        (name = "access-keys", description = "Access keys: proxy keys with their own groups, models, limits and quotas"),
        (name = "usage", description = "Requests and tokens by hour, group, key, model and access key"),
        (name = "dashboard", description = "Stat cards, chart and checks"),
        (name = "settings", description = "System settings"),
        (name = "integration", description = "What a proxy key can use"),
        (name = "cluster", description = "The nodes of a cluster and this node's role"),
    ),
)]
struct BaseDoc;

/// The admin key's four carriers, as security schemes.
struct AdminKey;

impl Modify for AdminKey {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let schemes = [
            (
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            ),
            (
                "x_api_key",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
            ),
            (
                "x_goog_api_key",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Goog-Api-Key"))),
            ),
            (
                "query_key",
                SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("key"))),
            ),
        ];
        for (name, scheme) in schemes {
            components.add_security_scheme(name, scheme);
        }
    }
}

/// What `routes.rs` starts the document from.
pub(crate) fn base() -> openapi::OpenApi {
    openapi::OpenApi::default()
}

/// The finished document, serialized once.
#[derive(Clone, Debug)]
pub(crate) struct Document(Arc<Bytes>);

impl Document {
    /// Puts the collected routes under `/api`, adds the common parts and an error response to
    /// every operation.
    pub(crate) fn new(routes: openapi::OpenApi) -> Self {
        let mut doc = BaseDoc::openapi().nest("/api", routes);
        let failure = ResponseBuilder::new()
            .description(
                "The error envelope; the status tells its kind (400, 401, 404, 405, 409, 413, \
                 429, 500), `code` is one of `ErrorCode`, and a `VALIDATION_FAILED` failure lists \
                 its invalid fields in `errors`",
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(openapi::Ref::from_schema_name("Failure"))))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for response in responses.values_mut() {
                    // OpenAPI requires a description on every response.
                    if let RefOr::T(response) = response
                        && response.description.is_empty()
                    {
                        "Success".clone_into(&mut response.description);
                    }
                }
                responses
                    .entry("default".to_owned())
                    .or_insert_with(|| RefOr::T(failure.clone()));
            }
        }
        let json = serde_json::to_vec(&doc).unwrap_or_default();
        Self(Arc::new(Bytes::from(json)))
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "integration", security(()),
    responses((status = 200, content_type = "application/json", body = Object,
        description = "an OpenAPI 3.1 document")))]
pub(crate) async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        Bytes::clone(&doc.0),
    )
        .into_response()
}
