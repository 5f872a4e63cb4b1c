//! Policies: named, reusable failure rules (`/api/policies`), attached to groups in priority
//! order (`/api/groups/{id}/policies`), and a dry run of rules against a sample answer
//! (`POST /api/policies/test`). A change applies to the groups' next requests on every node:
//! the registry recompiles each affected group and announces it (docs/KEYS.md, "Policies").

use std::collections::HashMap;

use chrono::NaiveDateTime;
use gpt_load_tower::{
    blacklist::{
        ClassifyOutcome, DefaultClassifier, RuleInput, RuleSet, StatusMatcher, UpstreamAnswer,
        upstream_message,
    },
    channel::ChannelKind,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    admin::prelude::*,
    models::{NewPolicy, PolicyRow, now},
    registry::failure_rules::{POLICY_TYPES, PolicyConfig},
    repo::{groups, policies},
    settings::FieldError,
};

/// A policy as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct PolicyJson {
    id: i64,
    name: String,
    description: String,
    /// `retry` or `degradation` (both hold failure rules).
    #[serde(rename = "type")]
    policy_type: String,
    /// `{"rules": [...]}`.
    #[schema(value_type = Object)]
    config: Value,
    priority: i32,
    is_active: bool,
    /// The groups it is attached to.
    group_ids: Vec<i64>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl PolicyJson {
    fn of(row: PolicyRow, group_ids: Vec<i64>) -> Self {
        Self {
            id: row.id,
            config: serde_json::from_str(&row.config).unwrap_or(Value::Null),
            name: row.name,
            description: row.description,
            policy_type: row.policy_type,
            priority: row.priority,
            is_active: row.is_active,
            group_ids,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The body of `POST /api/policies` (`name` and `config` required) and `PUT /api/policies/{id}`
/// (every field optional: what is left out is kept).
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyInput {
    name: Option<String>,
    description: Option<String>,
    /// `retry` (default) or `degradation`.
    #[serde(rename = "type")]
    policy_type: Option<String>,
    /// `{"rules": [{name, priority, conditions: [{type, operator, value | values}], action,
    /// max_retries, backoff_ms, duration}]}`.
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    priority: Option<i32>,
    is_active: Option<bool>,
}

/// A checked policy, ready to store.
struct Checked {
    name: String,
    description: String,
    policy_type: String,
    config: String,
    priority: i32,
    is_active: bool,
}

impl Checked {
    fn row(&self) -> NewPolicy<'_> {
        NewPolicy {
            name: &self.name,
            description: &self.description,
            policy_type: &self.policy_type,
            config: &self.config,
            priority: self.priority,
            is_active: self.is_active,
            updated_at: now(),
        }
    }
}

impl PolicyInput {
    /// Applies the input over `stored` (an update) or over nothing (a creation), and checks it.
    fn check(self, stored: Option<&PolicyRow>) -> AdminResult<Checked> {
        let mut errors = Vec::new();
        let name = self
            .name
            .map(|n| n.trim().to_owned())
            .or_else(|| stored.map(|s| s.name.clone()))
            .unwrap_or_default();
        if name.is_empty() || name.chars().count() > 100 {
            errors.push(FieldError::new("name", "is required, at most 100 characters"));
        }
        let description = self
            .description
            .or_else(|| stored.map(|s| s.description.clone()))
            .unwrap_or_default();
        if description.chars().count() > 500 {
            errors.push(FieldError::new("description", "at most 500 characters"));
        }
        let policy_type = self
            .policy_type
            .or_else(|| stored.map(|s| s.policy_type.clone()))
            .unwrap_or_else(|| "retry".to_owned());
        if !POLICY_TYPES.contains(&policy_type.as_str()) {
            errors.push(FieldError::new(
                "type",
                format!(
                    "must be one of {} (model filters are the group's model_include / model_exclude settings)",
                    POLICY_TYPES.join(", ")
                ),
            ));
        }
        let config = match (self.config, stored) {
            (Some(config), _) => config.to_string(),
            (None, Some(stored)) => stored.config.clone(),
            (None, None) => {
                errors.push(FieldError::new("config", "is required: {\"rules\": [...]}"));
                String::new()
            }
        };
        if !config.is_empty()
            && let Err(err) = PolicyConfig::parse(&config)
        {
            errors.push(FieldError::new("config", err));
        }
        if !errors.is_empty() {
            return Err(AdminError::Fields(errors));
        }
        Ok(Checked {
            name,
            description,
            policy_type,
            config,
            priority: self.priority.or(stored.map(|s| s.priority)).unwrap_or(0),
            is_active: self.is_active.or(stored.map(|s| s.is_active)).unwrap_or(true),
        })
    }
}

/// Each policy's groups.
async fn attachments(state: &AdminState) -> AdminResult<HashMap<i64, Vec<i64>>> {
    let mut by_policy: HashMap<i64, Vec<i64>> = HashMap::new();
    for (link, _) in policies::attached(state.registry.db(), None).await? {
        by_policy.entry(link.policy_id).or_default().push(link.group_id);
    }
    Ok(by_policy)
}

#[utoipa::path(get, path = "/policies", tag = "policies",
    responses((status = 200, body = Envelope<Vec<PolicyJson>>)))]
pub(crate) async fn list_policies(Admin { state, lang }: Admin) -> Reply<Vec<PolicyJson>> {
    let mut groups = attachments(&state).await?;
    let list = policies::list(state.registry.db())
        .await?
        .into_iter()
        .map(|row| {
            let ids = groups.remove(&row.id).unwrap_or_default();
            PolicyJson::of(row, ids)
        })
        .collect();
    Ok(ok(text(lang, "Success", "操作成功"), list))
}

#[utoipa::path(post, path = "/policies", tag = "policies", request_body = PolicyInput,
    responses((status = 200, body = Envelope<PolicyJson>)))]
pub(crate) async fn create_policy(
    Admin { state, lang }: Admin,
    AdminJson(input): AdminJson<PolicyInput>,
) -> Reply<PolicyJson> {
    let checked = input.check(None)?;
    let row = state.registry.create_policy(&checked.row()).await?;
    Ok(ok(
        text(lang, "Policy created", "策略已创建"),
        PolicyJson::of(row, Vec::new()),
    ))
}

#[utoipa::path(get, path = "/policies/{id}", tag = "policies", params(("id" = i64, Path)),
    responses((status = 200, body = Envelope<PolicyJson>)))]
pub(crate) async fn get_policy(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> Reply<PolicyJson> {
    let row = policies::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("policy"))?;
    let ids = policies::groups_of(state.registry.db(), id).await?;
    Ok(ok(text(lang, "Success", "操作成功"), PolicyJson::of(row, ids)))
}

#[utoipa::path(put, path = "/policies/{id}", tag = "policies", params(("id" = i64, Path)),
    request_body = PolicyInput, responses((status = 200, body = Envelope<PolicyJson>)))]
pub(crate) async fn update_policy(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(input): AdminJson<PolicyInput>,
) -> Reply<PolicyJson> {
    let stored = policies::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("policy"))?;
    let checked = input.check(Some(&stored))?;
    let row = state
        .registry
        .update_policy(id, &checked.row())
        .await?
        .ok_or(AdminError::NotFound("policy"))?;
    let ids = policies::groups_of(state.registry.db(), id).await?;
    Ok(ok(
        text(lang, "Policy updated", "策略已更新"),
        PolicyJson::of(row, ids),
    ))
}

#[utoipa::path(delete, path = "/policies/{id}", tag = "policies", params(("id" = i64, Path)),
    responses((status = 200, body = Ack)))]
pub(crate) async fn delete_policy(Admin { state, lang }: Admin, AdminPath(id): AdminPath<i64>) -> AckReply {
    if !state.registry.delete_policy(id).await? {
        return Err(AdminError::NotFound("policy"));
    }
    Ok(ack(text(lang, "Policy deleted", "策略已删除")))
}

/// One of a group's policies, as answered.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct GroupPolicyJson {
    policy_id: i64,
    /// Evaluation order within the group, lowest first (ties by the policy's own priority, then
    /// id).
    priority: i32,
    /// Whether the attachment applies; a policy applies only when it is active itself too.
    is_active: bool,
    /// The policy's name.
    name: String,
    /// The policy's own switch.
    policy_active: bool,
}

/// One of a group's policies, as set.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupPolicyEntry {
    policy_id: i64,
    /// Evaluation order within the group, lowest first (default 0).
    #[serde(default)]
    priority: i32,
    /// Whether the attachment applies (default true).
    #[serde(default = "yes")]
    is_active: bool,
}

fn yes() -> bool {
    true
}

/// The body of `PUT /api/groups/{id}/policies`: the group's whole list.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupPoliciesInput {
    policies: Vec<GroupPolicyEntry>,
}

async fn group_policies(state: &AdminState, group_id: i64) -> AdminResult<Vec<GroupPolicyJson>> {
    Ok(policies::attached(state.registry.db(), Some(group_id))
        .await?
        .into_iter()
        .map(|(link, policy)| GroupPolicyJson {
            policy_id: link.policy_id,
            priority: link.priority,
            is_active: link.is_active,
            name: policy.name,
            policy_active: policy.is_active,
        })
        .collect())
}

#[utoipa::path(get, path = "/groups/{id}/policies", tag = "policies", params(("id" = i64, Path)),
    responses((status = 200, body = Envelope<Vec<GroupPolicyJson>>)))]
pub(crate) async fn list_group_policies(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
) -> Reply<Vec<GroupPolicyJson>> {
    groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    Ok(ok(
        text(lang, "Success", "操作成功"),
        group_policies(&state, id).await?,
    ))
}

#[utoipa::path(put, path = "/groups/{id}/policies", tag = "policies", params(("id" = i64, Path)),
    request_body = GroupPoliciesInput, responses((status = 200, body = Envelope<Vec<GroupPolicyJson>>)))]
pub(crate) async fn set_group_policies(
    Admin { state, lang }: Admin,
    AdminPath(id): AdminPath<i64>,
    AdminJson(input): AdminJson<GroupPoliciesInput>,
) -> Reply<Vec<GroupPolicyJson>> {
    groups::find(state.registry.db(), id)
        .await?
        .ok_or(AdminError::NotFound("group"))?;
    let known: Vec<i64> = policies::list(state.registry.db())
        .await?
        .iter()
        .map(|p| p.id)
        .collect();
    let mut attach = Vec::with_capacity(input.policies.len());
    for (i, p) in input.policies.iter().enumerate() {
        if !known.contains(&p.policy_id) {
            return Err(AdminError::validation(
                format!("policies[{i}].policy_id"),
                format!("no policy {}", p.policy_id),
            ));
        }
        if attach.iter().any(|&(id, _, _)| id == p.policy_id) {
            return Err(AdminError::validation(
                format!("policies[{i}].policy_id"),
                format!("policy {} is listed twice", p.policy_id),
            ));
        }
        attach.push((p.policy_id, p.priority, p.is_active));
    }
    state.registry.set_group_policies(id, &attach).await?;
    Ok(ok(
        text(lang, "Group policies updated", "分组策略已更新"),
        group_policies(&state, id).await?,
    ))
}

/// An upstream answer to try rules on.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SampleAnswer {
    /// The status code.
    status: u16,
    /// The response body (an upstream error body).
    #[serde(default)]
    body: String,
    /// Response headers (`Retry-After`, the providers' reset headers).
    #[serde(default)]
    headers: HashMap<String, String>,
    /// The requested model.
    model: Option<String>,
    /// The group's channel (default `openai`).
    channel: Option<String>,
    /// The attempt's number (default 1).
    attempt: Option<u32>,
    /// The key's consecutive failures before the attempt (default 0).
    failure_count: Option<u32>,
}

/// The body of `POST /api/policies/test`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleTest {
    /// The rules to try, as a policy's config: `{"rules": [...]}`.
    #[schema(value_type = Object)]
    config: Value,
    sample: SampleAnswer,
}

/// What the rules (and without them, the built-in rules) make of the sample.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct RuleTestResult {
    /// Whether one of the rules matched.
    matched: bool,
    /// The rule that matched (`rule N` when it has no name).
    rule: Option<String>,
    /// What happens to the attempt and its key: `retry`, `retry_same`, `cool_down`, `degrade`,
    /// `invalidate`, `disable`, `fail`, or the built-in rules' outcome when nothing matched.
    outcome: String,
    /// What the built-in rules alone decide, for comparison.
    builtin_outcome: String,
    /// The upstream's error message as parsed from the body.
    message: String,
}

#[utoipa::path(post, path = "/policies/test", tag = "policies", request_body = RuleTest,
    responses((status = 200, body = Envelope<RuleTestResult>)))]
pub(crate) async fn test_rules(
    Admin { lang, .. }: Admin,
    AdminJson(test): AdminJson<RuleTest>,
) -> Reply<RuleTestResult> {
    let config =
        PolicyConfig::parse(&test.config.to_string()).map_err(|e| AdminError::validation("config", e))?;
    let rules = RuleSet::compile([(String::new(), config.rules)])
        .map_err(|e| AdminError::validation("config", e.to_string()))?;
    let sample = test.sample;
    let status = StatusCode::from_u16(sample.status)
        .ok()
        .filter(|s| s.as_u16() >= 100)
        .ok_or_else(|| AdminError::validation("sample.status", "must be a status code (100-999)"))?;
    let channel = match sample.channel.as_deref() {
        None => ChannelKind::OpenAi,
        Some(name) => name
            .parse()
            .map_err(|_| AdminError::validation("sample.channel", format!("unknown channel '{name}'")))?,
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &sample.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            return Err(AdminError::validation(
                "sample.headers",
                format!("invalid header '{name}'"),
            ));
        };
        headers.insert(name, value);
    }
    let failover = StatusMatcher::default().matches(status.as_u16());
    let message = upstream_message(&sample.body);
    let answer = UpstreamAnswer::new(status, &headers, failover).with_body(&sample.body, &message);
    let builtin = DefaultClassifier::new().classify_response(&answer);
    let input = RuleInput {
        answer: &answer,
        channel,
        model: sample.model.as_deref(),
        attempt: sample.attempt.unwrap_or(1).max(1),
        failure_count: sample.failure_count.unwrap_or(0),
    };
    let fired = rules.evaluate(&input);
    let result = RuleTestResult {
        matched: fired.is_some(),
        outcome: fired.as_ref().map_or_else(
            || builtin.as_str().to_owned(),
            |f| action_of(f.outcome).to_owned(),
        ),
        rule: fired.map(|f| f.rule.to_string()),
        builtin_outcome: builtin.as_str().to_owned(),
        message,
    };
    Ok(ok(text(lang, "Success", "操作成功"), result))
}

/// A rule's outcome named as its action.
fn action_of(outcome: gpt_load_tower::blacklist::Outcome) -> &'static str {
    use gpt_load_tower::blacklist::Outcome;
    match outcome {
        Outcome::Failure { counted: false } => "retry",
        Outcome::RetrySame(_) => "retry_same",
        Outcome::CoolDown(_) => "cool_down",
        Outcome::Failure { counted: true } => "degrade",
        Outcome::Dead => "invalidate",
        Outcome::Disabled => "disable",
        _ => "fail",
    }
}
