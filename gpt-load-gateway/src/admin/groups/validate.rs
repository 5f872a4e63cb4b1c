//! gpt-load's group rules, each failure naming its field.

use gpt_load_tower::{channel::ChannelKind, rewrite::HeaderRule, upstream::Upstream};
use http::HeaderName;
use serde_json::{Map, Value};

use super::json::{GroupInput, HeaderRuleJson};
use crate::{
    admin::error::AdminError,
    bootstrap::{UpstreamSpec, valid_group_name},
    crypto::proxy_keys,
    models::GroupRow,
    settings::validate_group_config,
};

/// A group's fields after validation, as they are stored.
#[derive(Clone, Debug)]
pub(crate) struct GroupFields {
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) description: String,
    pub(crate) group_type: String,
    pub(crate) upstreams: String,
    pub(crate) channel_type: String,
    pub(crate) sort: i32,
    pub(crate) test_model: String,
    pub(crate) validation_endpoint: String,
    pub(crate) param_overrides: String,
    pub(crate) model_redirect_rules: String,
    pub(crate) model_redirect_strict: bool,
    pub(crate) config: String,
    pub(crate) header_rules: String,
    pub(crate) proxy_keys: String,
}

fn invalid(field: &str, message: impl Into<String>) -> AdminError {
    AdminError::validation(field, message)
}

/// Validates a new group.
pub(crate) fn create(input: GroupInput) -> Result<GroupFields, AdminError> {
    let blank = GroupFields {
        name: String::new(),
        display_name: String::new(),
        description: String::new(),
        group_type: "standard".to_owned(),
        upstreams: "[]".to_owned(),
        channel_type: String::new(),
        sort: 0,
        test_model: String::new(),
        validation_endpoint: String::new(),
        param_overrides: "{}".to_owned(),
        model_redirect_rules: "{}".to_owned(),
        model_redirect_strict: false,
        config: "{}".to_owned(),
        header_rules: "[]".to_owned(),
        proxy_keys: String::new(),
    };
    merge(blank, input, true)
}

/// Validates a partial update of `row`, whose proxy keys are `current_proxy_keys` (decrypted);
/// absent fields stay as they are; the group type never changes.
pub(crate) fn update(
    row: &GroupRow,
    current_proxy_keys: String,
    mut input: GroupInput,
) -> Result<GroupFields, AdminError> {
    input.group_type = None;
    if row.group_type == "aggregate" {
        input.channel_type = None;
    }
    if input.test_model.as_deref() == Some("") {
        input.test_model = None;
    }
    let current = GroupFields {
        name: row.name.clone(),
        display_name: row.display_name.clone(),
        description: row.description.clone(),
        group_type: row.group_type.clone(),
        upstreams: row.upstreams.clone(),
        channel_type: row.channel_type.clone(),
        sort: row.sort,
        test_model: row.test_model.clone(),
        validation_endpoint: row.validation_endpoint.clone(),
        param_overrides: row.param_overrides.clone(),
        model_redirect_rules: row.model_redirect_rules.clone(),
        model_redirect_strict: row.model_redirect_strict,
        config: row.config.clone(),
        header_rules: row.header_rules.clone(),
        proxy_keys: current_proxy_keys,
    };
    merge(current, input, false)
}

fn merge(mut g: GroupFields, input: GroupInput, creating: bool) -> Result<GroupFields, AdminError> {
    if let Some(name) = input.name {
        g.name = name.trim().to_owned();
    }
    if !valid_group_name(&g.name) {
        return Err(invalid("name", "must match ^[a-z0-9_-]{1,100}$"));
    }
    if let Some(v) = input.display_name {
        g.display_name = v.trim().to_owned();
    }
    if let Some(v) = input.description {
        g.description = v.trim().to_owned();
    }
    if creating {
        g.group_type = input
            .group_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "standard".to_owned());
        if g.group_type != "standard" && g.group_type != "aggregate" {
            return Err(invalid("group_type", "must be standard or aggregate"));
        }
    }
    if let Some(v) = input.channel_type {
        g.channel_type = v;
    }
    if g.channel_type.parse::<ChannelKind>().is_err() {
        return Err(invalid(
            "channel_type",
            "must be openai, openai-response, gemini or anthropic",
        ));
    }
    if let Some(v) = input.sort {
        g.sort = v;
    }
    if let Some(v) = input.proxy_keys {
        g.proxy_keys = v
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        if let Err(err) = g.proxy_keys.split(',').try_for_each(proxy_keys::check_key) {
            return Err(invalid("proxy_keys", err.to_string()));
        }
    }
    if let Some(v) = input.model_redirect_strict {
        g.model_redirect_strict = v;
    }
    if let Some(config) = input.config {
        let parsed = validate_group_config(&config).map_err(AdminError::fields)?;
        g.config = parsed.to_json_string();
    }
    if let Some(overrides) = input.param_overrides {
        g.param_overrides = Value::Object(overrides).to_string();
    }
    if let Some(rules) = input.header_rules {
        g.header_rules = header_rules(rules)?;
    }
    let aggregate = g.group_type == "aggregate";
    if let Some(rules) = input.model_redirect_rules {
        if aggregate && !rules.is_empty() {
            return Err(invalid(
                "model_redirect_rules",
                "aggregate groups have no model redirect rules",
            ));
        }
        redirect_rules(&rules)?;
        g.model_redirect_rules = Value::Object(rules).to_string();
    }
    if aggregate {
        g.upstreams = "[]".to_owned();
        g.test_model = "-".to_owned();
        g.validation_endpoint = String::new();
        return Ok(g);
    }
    if let Some(v) = input.test_model {
        g.test_model = v.trim().to_owned();
    }
    if g.test_model.is_empty() {
        return Err(invalid("test_model", "is required for standard groups"));
    }
    if let Some(v) = input.validation_endpoint {
        let v = v.trim().to_owned();
        if !v.is_empty() && (!v.starts_with('/') || v.contains("://")) {
            return Err(invalid(
                "validation_endpoint",
                "must be empty or a path starting with /",
            ));
        }
        g.validation_endpoint = v;
    }
    if let Some(upstreams) = input.upstreams {
        g.upstreams = upstreams_json(&upstreams)?;
    }
    let stored: Vec<UpstreamSpec> = serde_json::from_str(&g.upstreams).unwrap_or_default();
    if stored.is_empty() {
        return Err(invalid(
            "upstreams",
            "a standard group needs at least one upstream",
        ));
    }
    Ok(g)
}

fn upstreams_json(upstreams: &[UpstreamSpec]) -> Result<String, AdminError> {
    for u in upstreams {
        if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
            return Err(invalid(
                "upstreams",
                format!("'{}' must start with http:// or https://", u.url),
            ));
        }
        Upstream::new(&u.url, u.weight).map_err(|e| invalid("upstreams", e.to_string()))?;
    }
    if !upstreams.is_empty() && upstreams.iter().all(|u| u.weight == 0) {
        return Err(invalid(
            "upstreams",
            "at least one upstream needs a weight above 0",
        ));
    }
    serde_json::to_string(upstreams).map_err(|e| AdminError::Internal(e.into()))
}

fn header_rules(rules: Vec<HeaderRuleJson>) -> Result<String, AdminError> {
    let mut seen: Vec<HeaderName> = Vec::new();
    let mut kept = Vec::new();
    for rule in rules.into_iter().filter(|r| !r.key.trim().is_empty()) {
        let parsed = match rule.action.as_str() {
            "set" => HeaderRule::set(&rule.key, &rule.value),
            "remove" => HeaderRule::remove(&rule.key),
            other => {
                return Err(invalid(
                    "header_rules",
                    format!("action '{other}' must be set or remove"),
                ));
            }
        }
        .map_err(|e| invalid("header_rules", e.to_string()))?;
        if seen.contains(parsed.name()) {
            return Err(invalid(
                "header_rules",
                format!("header '{}' appears twice", rule.key.trim()),
            ));
        }
        seen.push(parsed.name().clone());
        kept.push(HeaderRuleJson {
            key: canonical_header_name(rule.key.trim()),
            ..rule
        });
    }
    serde_json::to_string(&kept).map_err(|e| AdminError::Internal(e.into()))
}

/// `x-custom-id` → `X-Custom-Id`, the form gpt-load stores and shows header names in.
fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

fn redirect_rules(rules: &Map<String, Value>) -> Result<(), AdminError> {
    for (from, to) in rules {
        match to {
            Value::String(to) if !from.trim().is_empty() && !to.trim().is_empty() => {}
            _ => {
                return Err(invalid(
                    "model_redirect_rules",
                    format!("rule '{from}' needs a non-blank source and target model"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::canonical_header_name;

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical_header_name("x-custom-ID"), "X-Custom-Id");
        assert_eq!(canonical_header_name("AUTHORIZATION"), "Authorization");
        assert_eq!(canonical_header_name("a--b"), "A--B");
    }
}
