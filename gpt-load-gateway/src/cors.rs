//! CORS as gpt-load applies it (`ENABLE_CORS`, off by default): an allowed `Origin` is echoed
//! back (never a literal `*`, so credentials can work), methods and headers as configured, and
//! preflight `OPTIONS` requests are answered before authentication.

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::config::cors::CorsConfig;

/// The CORS layer, or `None` when CORS is off.
pub(crate) fn layer(config: &CorsConfig) -> Option<CorsLayer> {
    if !config.enabled {
        return None;
    }
    let origins: Vec<HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let any = config.allows_any_origin();
    let origin = AllowOrigin::predicate(move |origin: &HeaderValue, _| any || origins.contains(origin));
    let methods: Vec<Method> = config
        .allowed_methods
        .iter()
        .filter_map(|m| m.parse().ok())
        .collect();
    let headers = if config.allowed_headers.iter().any(|h| h == "*") {
        AllowHeaders::mirror_request()
    } else {
        AllowHeaders::list(
            config
                .allowed_headers
                .iter()
                .filter_map(|h| HeaderName::try_from(h.as_str()).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods(AllowMethods::list(methods))
            .allow_headers(headers)
            .allow_credentials(config.allow_credentials),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Router, body::Body, routing::get};
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    fn config(origins: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            enabled: true,
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allowed_methods: vec!["GET".to_owned(), "POST".to_owned()],
            allowed_headers: vec!["*".to_owned()],
            allow_credentials: credentials,
        }
    }

    async fn preflight(cors: CorsLayer, origin: &str) -> http::Response<Body> {
        let app = Router::new().route("/x", get(|| async { "ok" })).layer(cors);
        let req = Request::options("/x")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap();
        app.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn echoes_allowed_origins_only() {
        let res = preflight(
            layer(&config(&["https://app.example"], true)).unwrap(),
            "https://app.example",
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(res.headers()["access-control-allow-credentials"], "true");
        let res = preflight(
            layer(&config(&["https://app.example"], false)).unwrap(),
            "https://evil.example",
        )
        .await;
        assert!(res.headers().get("access-control-allow-origin").is_none());
        let res = preflight(layer(&config(&["*"], false)).unwrap(), "https://any.example").await;
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://any.example",
            "never a literal *"
        );
    }

    #[test]
    fn off_by_default() {
        assert!(
            layer(&CorsConfig {
                enabled: false,
                ..config(&["*"], false)
            })
            .is_none()
        );
    }
}
