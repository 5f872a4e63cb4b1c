use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::ModelFilter;
use crate::{context::GroupName, group_map::GroupMap, wrr::SmoothWeighted};

/// One header rule: set a header (with variables) or remove it.
#[derive(Clone, Debug)]
pub struct HeaderRule {
    pub(super) name: HeaderName,
    pub(super) action: HeaderAction,
}

#[derive(Clone, Debug)]
pub(super) enum HeaderAction {
    Set(Vec<Segment>),
    Remove,
}

/// A piece of a header template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Segment {
    Text(String),
    ClientIp,
    GroupName,
    ApiKey,
    TimestampMs,
    TimestampS,
}

/// A header rule that cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidHeaderRule(String);

impl fmt::Display for InvalidHeaderRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid header rule: {}", self.0)
    }
}

impl std::error::Error for InvalidHeaderRule {}

/// The values a header template can refer to.
pub(super) struct Variables<'a> {
    pub(super) client_ip: Option<String>,
    pub(super) group: &'a str,
    pub(super) api_key: Option<&'a str>,
}

impl HeaderRule {
    /// Sets `name` to `template` on every attempt. `${CLIENT_IP}`, `${GROUP_NAME}`, `${API_KEY}`,
    /// `${TIMESTAMP_MS}` and `${TIMESTAMP_S}` are replaced; other `${…}` stay as written.
    pub fn set(name: &str, template: &str) -> Result<Self, InvalidHeaderRule> {
        let name = header_name(name)?;
        Ok(Self {
            name,
            action: HeaderAction::Set(parse_template(template)),
        })
    }

    /// Removes `name` on every attempt (including a credential the channel injected).
    pub fn remove(name: &str) -> Result<Self, InvalidHeaderRule> {
        Ok(Self {
            name: header_name(name)?,
            action: HeaderAction::Remove,
        })
    }

    /// The header the rule acts on.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    pub(super) fn render(segments: &[Segment], vars: &Variables<'_>) -> Option<HeaderValue> {
        let mut out = String::new();
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        for segment in segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::ClientIp => out.push_str(vars.client_ip.as_deref().unwrap_or("")),
                Segment::GroupName => out.push_str(vars.group),
                Segment::ApiKey => out.push_str(vars.api_key.unwrap_or("")),
                Segment::TimestampMs => out.push_str(&now().as_millis().to_string()),
                Segment::TimestampS => out.push_str(&now().as_secs().to_string()),
            }
        }
        let mut value = HeaderValue::try_from(out).ok()?;
        if segments.contains(&Segment::ApiKey) {
            value.set_sensitive(true);
        }
        Some(value)
    }
}

fn header_name(name: &str) -> Result<HeaderName, InvalidHeaderRule> {
    HeaderName::try_from(name.trim())
        .map_err(|_| InvalidHeaderRule(format!("`{name}` is not a valid header name")))
}

fn parse_template(template: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else { break };
        let variable = match &rest[start + 2..start + len] {
            "CLIENT_IP" => Some(Segment::ClientIp),
            "GROUP_NAME" => Some(Segment::GroupName),
            "API_KEY" => Some(Segment::ApiKey),
            "TIMESTAMP_MS" => Some(Segment::TimestampMs),
            "TIMESTAMP_S" => Some(Segment::TimestampS),
            _ => None,
        };
        let end = start + len + 1;
        match variable {
            Some(var) => {
                push_text(&mut segments, &rest[..start]);
                segments.push(var);
            }
            None => push_text(&mut segments, &rest[..end]),
        }
        rest = &rest[end..];
    }
    push_text(&mut segments, rest);
    segments
}

fn push_text(segments: &mut Vec<Segment>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Segment::Text(last)) = segments.last_mut() {
        last.push_str(text);
    } else {
        segments.push(Segment::Text(text.to_owned()));
    }
}

/// The request rewriting of one standard group.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GroupRules {
    /// Top-level fields written into JSON object bodies.
    pub param_overrides: Map<String, Value>,
    /// Requested model → upstream model.
    pub model_redirects: HashMap<String, String>,
    /// Refuse models the redirect rules do not list (only when there are rules).
    pub strict_model: bool,
    /// Applied in order on every attempt, after the credential is injected.
    pub header_rules: Vec<HeaderRule>,
    /// Asks OpenAI-format chat and completion streams to report their usage
    /// (`stream_options.include_usage`), so their tokens can be counted.
    pub include_stream_usage: bool,
}

impl GroupRules {
    /// No rewriting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the parameter overrides.
    #[must_use]
    pub fn param_overrides(mut self, overrides: Map<String, Value>) -> Self {
        self.param_overrides = overrides;
        self
    }

    /// Adds a model redirect.
    #[must_use]
    pub fn redirect_model(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.model_redirects.insert(from.into(), to.into());
        self
    }

    /// Refuses models that no redirect rule lists.
    #[must_use]
    pub fn strict_model(mut self, strict: bool) -> Self {
        self.strict_model = strict;
        self
    }

    /// Adds a header rule.
    #[must_use]
    pub fn header_rule(mut self, rule: HeaderRule) -> Self {
        self.header_rules.push(rule);
        self
    }

    /// Asks OpenAI-format chat and completion streams to report their usage: their last chunk
    /// then carries `usage` (and `choices: []`), which clients that did not ask for it receive
    /// too. Requests that are not streamed are unchanged.
    #[must_use]
    pub fn include_stream_usage(mut self, include: bool) -> Self {
        self.include_stream_usage = include;
        self
    }

    pub(super) fn rewrites_body(&self) -> bool {
        !self.param_overrides.is_empty() || !self.model_redirects.is_empty() || self.include_stream_usage
    }

    /// Whether strict redirect rules let `model` through.
    pub(super) fn redirects_accept(&self, model: &str) -> bool {
        !self.strict_model || self.model_redirects.is_empty() || self.model_redirects.contains_key(model)
    }
}

pub(super) struct Aggregate {
    pub(super) members: Box<[GroupName]>,
    pub(super) wrr: Mutex<SmoothWeighted>,
}

pub(super) enum Route {
    Standard(GroupRules),
    Aggregate(Arc<Aggregate>),
}

/// Rewriting rules, aggregate groups and model filters by group, swappable at run time. Cloning
/// shares it.
#[derive(Clone, Default)]
pub struct RewriteTable {
    routes: Arc<GroupMap<Route>>,
    /// Only groups with a filter are present, so a table without filters costs one emptiness
    /// check per request.
    filters: Arc<GroupMap<ModelFilter>>,
}

impl RewriteTable {
    /// An empty table: no group is rewritten.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the rules of a standard group.
    pub fn set_group(&self, group: GroupName, rules: GroupRules) {
        self.routes.update(|routes| {
            routes.insert(group, Arc::new(Route::Standard(rules)));
        });
    }

    /// Makes `group` an aggregate over weighted sub-groups (weight 0 = off). The round-robin
    /// position restarts.
    pub fn set_aggregate(&self, group: GroupName, members: impl IntoIterator<Item = (GroupName, u32)>) {
        let (members, weights): (Vec<_>, Vec<_>) = members.into_iter().unzip();
        let aggregate = Aggregate {
            members: members.into(),
            wrr: Mutex::new(SmoothWeighted::new(weights)),
        };
        self.routes.update(|routes| {
            routes.insert(group, Arc::new(Route::Aggregate(Arc::new(aggregate))));
        });
    }

    /// Sets the models a group (standard or aggregate) serves; an empty filter removes it. A
    /// request for another model is refused before a key is spent, and an aggregate routes only
    /// to sub-groups that serve the model.
    pub fn set_model_filter(&self, group: GroupName, filter: ModelFilter) {
        self.filters.update(|filters| {
            if filter.is_empty() {
                filters.remove(group.as_str());
            } else {
                filters.insert(group, Arc::new(filter));
            }
        });
    }

    /// The model filter of a group, when it has one.
    pub fn model_filter(&self, group: &str) -> Option<Arc<ModelFilter>> {
        self.filters.get(group)
    }

    /// Whether any group filters models (cheap: no lookup).
    pub(super) fn filters_models(&self) -> bool {
        !self.filters.load().is_empty()
    }

    /// Whether `group` serves `model`: its filter, and its strict redirect rules.
    pub fn serves(&self, group: &str, model: &str) -> bool {
        let filtered = self.model_filter(group).is_some_and(|f| !f.allows(model));
        let strict = match self.route(group).as_deref() {
            Some(Route::Standard(rules)) => !rules.redirects_accept(model),
            _ => false,
        };
        !filtered && !strict
    }

    /// Forgets a group.
    pub fn remove_group(&self, group: &str) {
        self.routes.update(|routes| {
            routes.remove(group);
        });
        if self.filters.get(group).is_some() {
            self.filters.update(|filters| {
                filters.remove(group);
            });
        }
    }

    pub(super) fn route(&self, group: &str) -> Option<Arc<Route>> {
        self.routes.get(group)
    }

    /// The rules of a standard group.
    pub fn rules(&self, group: &str) -> Option<GroupRules> {
        match self.route(group).as_deref() {
            Some(Route::Standard(rules)) => Some(rules.clone()),
            _ => None,
        }
    }
}

impl fmt::Debug for RewriteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RewriteTable")
            .field("groups", &self.routes.load().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        assert_eq!(
            parse_template("ip=${CLIENT_IP};g=${GROUP_NAME} ${UNKNOWN} ${API_KEY}${TIMESTAMP_S}"),
            [
                Segment::Text("ip=".into()),
                Segment::ClientIp,
                Segment::Text(";g=".into()),
                Segment::GroupName,
                Segment::Text(" ${UNKNOWN} ".into()),
                Segment::ApiKey,
                Segment::TimestampS,
            ]
        );
        assert_eq!(
            parse_template("plain ${open"),
            [Segment::Text("plain ${open".into())]
        );
        assert!(parse_template("").is_empty());
    }

    #[test]
    fn renders_and_marks_keys_sensitive() {
        let vars = Variables {
            client_ip: Some("1.2.3.4".into()),
            group: "g",
            api_key: Some("sk"),
        };
        let v = HeaderRule::render(&parse_template("${CLIENT_IP}/${GROUP_NAME}"), &vars).unwrap();
        assert_eq!(v, "1.2.3.4/g");
        assert!(!v.is_sensitive());
        let v = HeaderRule::render(&parse_template("Bearer ${API_KEY}"), &vars).unwrap();
        assert!(v.is_sensitive());
        let ms: u128 = HeaderRule::render(&parse_template("${TIMESTAMP_MS}"), &vars)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms > 1_600_000_000_000);
        assert!(HeaderRule::render(&[Segment::Text("bad\nvalue".into())], &vars).is_none());
    }

    #[test]
    fn rejects_bad_header_names() {
        assert!(HeaderRule::set("bad name", "x").is_err());
        assert!(
            HeaderRule::remove("")
                .unwrap_err()
                .to_string()
                .contains("header name")
        );
        assert_eq!(HeaderRule::set(" X-Custom ", "v").unwrap().name(), "x-custom");
    }
}
