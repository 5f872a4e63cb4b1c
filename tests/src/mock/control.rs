//! `/__mock/*` control endpoints for driving a separately started mock.
//! They need no credential and are not recorded.

use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::behaviour::Behaviour;
use super::body::MockBody;
use super::error::{self, Failure, Family};
use super::record::ReceivedRequest;
use super::reply;
use super::server::Shared;

const PREFIX: &str = "/__mock/";

/// Whether `path` addresses a control endpoint.
pub(crate) fn is_control(path: &str) -> bool {
    path.starts_with(PREFIX)
}

/// Serves one control request.
pub(crate) fn handle(shared: &Shared, parts: &Parts, body: &Bytes) -> Response<MockBody> {
    let path = parts.uri.path();
    let endpoint = &path[PREFIX.len()..];
    match (endpoint, &parts.method) {
        ("requests", &Method::GET) => {
            let list: Vec<Value> = shared.recorder.received().iter().map(to_json).collect();
            reply::json(StatusCode::OK, &Value::Array(list))
        }
        ("requests", &Method::DELETE) => {
            shared.recorder.clear();
            no_content()
        }
        ("stats", &Method::GET) => reply::json(
            StatusCode::OK,
            &json!({"total": shared.recorder.total(), "by_key": shared.recorder.by_key()}),
        ),
        ("script", &Method::POST) => match parse_script(body) {
            Ok((key, behaviour)) => {
                shared.scripts.set(&key, behaviour);
                no_content()
            }
            Err(message) => error::respond(Family::OpenAi, &Failure::BadRequest(&message)),
        },
        ("script", &Method::DELETE) => {
            shared.scripts.clear();
            no_content()
        }
        ("requests" | "stats" | "script", method) => {
            error::respond(Family::OpenAi, &Failure::MethodNotAllowed(method, path))
        }
        _ => error::respond(Family::OpenAi, &Failure::NotFound(&parts.method, path)),
    }
}

fn no_content() -> Response<MockBody> {
    let mut response = Response::new(MockBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn to_json(request: &ReceivedRequest) -> Value {
    let mut headers = Map::new();
    for name in request.headers.keys() {
        let joined = request
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), Value::String(joined));
    }
    json!({
        "method": request.method.as_str(),
        "path": request.path,
        "query": request.query,
        "credential": request.credential,
        "headers": headers,
        "body": String::from_utf8_lossy(&request.body),
    })
}

/// Parses `{"key","behaviour",...}` into a script entry.
fn parse_script(body: &[u8]) -> Result<(String, Behaviour), String> {
    let value: Value = serde_json::from_slice(body).map_err(|err| format!("invalid JSON body: {err}"))?;
    let field = |name: &str| value.get(name).and_then(Value::as_u64);
    let key = value
        .get("key")
        .and_then(Value::as_str)
        .filter(|key| !key.is_empty())
        .ok_or("missing string field `key`")?;
    let name = value
        .get("behaviour")
        .and_then(Value::as_str)
        .ok_or("missing string field `behaviour`")?;
    let behaviour = match name {
        "valid" => Behaviour::Valid,
        "unauthorized" => Behaviour::Unauthorized,
        "rate_limited" => Behaviour::RateLimited {
            retry_after: Duration::from_secs(field("retry_after_secs").unwrap_or(1)),
        },
        "server_error" => Behaviour::ServerError,
        "quota_exhausted" => Behaviour::QuotaExhausted,
        "slow" | "slow_first_byte" => {
            Behaviour::SlowFirstByte(Duration::from_millis(field("delay_ms").unwrap_or(200)))
        }
        "cut" | "disconnect_mid_stream" => Behaviour::DisconnectMidStream {
            after_frames: field("after_frames").map_or(2, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        },
        "status" => {
            let status = field("status")
                .and_then(|code| u16::try_from(code).ok())
                .filter(|code| (100..=999).contains(code))
                .ok_or("behaviour `status` needs a numeric field `status`")?;
            Behaviour::Status(status)
        }
        "invalid_key_400" => Behaviour::InvalidKeyBadRequest,
        "out_of_credit" => Behaviour::OutOfCredit,
        "empty_reply" => Behaviour::EmptyReply,
        "provider_limit" => Behaviour::ProviderLimit {
            per_day: value.get("per_day").and_then(Value::as_bool).unwrap_or(false),
            reset: Duration::from_secs(field("reset_secs").unwrap_or(60)),
            model: value.get("model").and_then(Value::as_str).map(str::to_owned),
        },
        "flaky" => Behaviour::Flaky {
            per_mille: field("per_mille")
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n <= 1000)
                .ok_or("behaviour `flaky` needs a field `per_mille` in 0..=1000")?,
            status: field("status")
                .and_then(|code| u16::try_from(code).ok())
                .filter(|code| (100..=999).contains(code))
                .unwrap_or(500),
        },
        other => return Err(format!("unknown behaviour `{other}`")),
    };
    Ok((key.to_owned(), behaviour))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scripts() {
        let parse = |text: &str| parse_script(text.as_bytes());
        assert_eq!(
            parse(r#"{"key":"k","behaviour":"rate_limited","retry_after_secs":7}"#).unwrap(),
            (
                "k".to_owned(),
                Behaviour::RateLimited {
                    retry_after: Duration::from_secs(7)
                }
            )
        );
        assert_eq!(
            parse(r#"{"key":"k","behaviour":"cut"}"#).unwrap().1,
            Behaviour::DisconnectMidStream { after_frames: 2 }
        );
        assert_eq!(
            parse(r#"{"key":"k","behaviour":"status","status":503}"#)
                .unwrap()
                .1,
            Behaviour::Status(503)
        );
        assert_eq!(
            parse(r#"{"key":"k","behaviour":"provider_limit","per_day":true,"reset_secs":90,"model":"m"}"#)
                .unwrap()
                .1,
            Behaviour::ProviderLimit {
                per_day: true,
                reset: Duration::from_secs(90),
                model: Some("m".to_owned())
            }
        );
        assert!(parse(r#"{"key":"k","behaviour":"status"}"#).is_err());
        assert!(parse(r#"{"behaviour":"valid"}"#).is_err());
        assert!(parse(r#"{"key":"k","behaviour":"nope"}"#).is_err());
        assert!(parse("not json").is_err());
    }
}
