//! Operator rules that decide what an upstream answer means for its key, ahead of the
//! [`ClassifyOutcome`](super::ClassifyOutcome) defaults.
//!
//! A [`RuleSet`] is compiled once from [`RuleSpec`]s (regular expressions and status ranges
//! included) and shared by every request of a group; evaluating it allocates nothing unless a
//! rule asks for the error type, which parses the (small, already read) error body once.

use std::{fmt, sync::Arc, time::Duration};

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Outcome, QuotaSignal, UpstreamAnswer, quota_signal};
use crate::{channel::ChannelKind, rewrite::ModelFilter};

/// What a matching rule does with the attempt and its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Retry on another key; this key is left as it is.
    Retry,
    /// Retry on the same key after `backoff_ms` (default 1 s).
    RetrySame,
    /// Rest the key: for `duration` when given, else as long as the provider says or the group's
    /// backoff decides. Retried on another key.
    CoolDown,
    /// A counted failure: the key is selected less often, and blacklisted at the group's
    /// threshold. Retried on another key.
    Degrade,
    /// Blacklist the key now (re-validated in the background). Retried on another key.
    Invalidate,
    /// Take the key out of rotation until an operator enables it. Retried on another key.
    Disable,
    /// Return the answer to the client now; the key is left as it is.
    Fail,
}

impl RuleAction {
    /// The action's name in configurations and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::RetrySame => "retry_same",
            Self::CoolDown => "cool_down",
            Self::Degrade => "degrade",
            Self::Invalidate => "invalidate",
            Self::Disable => "disable",
            Self::Fail => "fail",
        }
    }
}

/// What a condition looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionField {
    /// The status code (numeric).
    StatusCode,
    /// The upstream's error message, parsed from the body.
    ErrorMessage,
    /// The whole error body (redacted).
    Body,
    /// The error's type: `error.type` (OpenAI, Anthropic), `error.status` (Gemini) or
    /// `error.code` when it is a string.
    ErrorType,
    /// The requested model.
    Model,
    /// The group's channel (`openai`, `gemini`, `anthropic`, `openai-response`).
    Channel,
    /// The attempt's number in its request, from 1 (numeric).
    Attempt,
    /// The key's consecutive counted failures before this attempt (numeric).
    FailureCount,
}

impl ConditionField {
    fn is_numeric(self) -> bool {
        matches!(self, Self::StatusCode | Self::Attempt | Self::FailureCount)
    }
}

/// How a condition compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionOperator {
    /// Equal (text: exact, ignoring ASCII case).
    Equals,
    /// Not equal.
    NotEquals,
    /// Contains the value, ignoring case (text only).
    Contains,
    /// Matches the regular expression anywhere (text only; `(?i)` for case-insensitive).
    Regex,
    /// One of `values`: numbers or ranges (`500-599`) for numbers, `*` wildcards for models,
    /// exact words otherwise.
    In,
    /// None of `values`.
    NotIn,
    /// Greater than (numbers only).
    Gt,
    /// Less than.
    Lt,
    /// Greater than or equal.
    Gte,
    /// Less than or equal.
    Lte,
}

/// One condition as configured: `{type, operator, value | values}` (the fork's shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// What is compared.
    #[serde(rename = "type")]
    pub field: ConditionField,
    /// How.
    pub operator: ConditionOperator,
    /// The value, for single-value operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ScalarValue>,
    /// The values, for `in` and `not_in` (a `value` is accepted there too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ScalarValue>,
}

/// A configured value: text or a number, as the operator needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScalarValue {
    /// A number.
    Number(i64),
    /// Text.
    Text(String),
}

impl fmt::Display for ScalarValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// One rule as configured: every condition must hold (none = always), then `action`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A name shown when the rule fires.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Order inside its policy, lowest first (ties keep the written order).
    #[serde(default)]
    pub priority: i32,
    /// The conditions, all of which must hold.
    #[serde(default)]
    pub conditions: Vec<ConditionSpec>,
    /// What to do.
    pub action: RuleAction,
    /// `retry` and `retry_same`: at most this many retries for the request from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// `retry_same`: the wait before the same key is tried again (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// `cool_down`: how long the key rests (`90s`, `5m`, `2h`, `1d`, or seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<ScalarValue>,
}

/// A configuration that does not compile, with the rule it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRule {
    /// The rule's name, or `rule N` (from 1).
    pub rule: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for InvalidRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.reason)
    }
}

impl std::error::Error for InvalidRule {}

/// Longest compiled regular expression, so a rule cannot hold one that eats memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest rest a rule can ask for: a week.
const MAX_RULE_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The default wait of `retry_same`.
const DEFAULT_RETRY_SAME_BACKOFF: Duration = Duration::from_secs(1);

/// Rules compiled and ready to evaluate, first match wins. Cheap to clone.
///
/// ```
/// use gpt_load_tower::blacklist::{Outcome, RuleInput, RuleSet, RuleSpec, UpstreamAnswer};
/// use gpt_load_tower::channel::ChannelKind;
/// use http::{HeaderMap, StatusCode};
///
/// let spec: Vec<(String, Vec<RuleSpec>)> = vec![(
///     "quota gone".into(),
///     serde_json::from_str(r#"[{"conditions":[
///         {"type":"status_code","operator":"in","values":["400-403"]},
///         {"type":"body","operator":"regex","value":"insufficient_quota"}],
///       "action":"invalidate"}]"#).unwrap(),
/// )];
/// let rules = RuleSet::compile(spec).unwrap();
///
/// let headers = HeaderMap::new();
/// let body = r#"{"error":{"code":"insufficient_quota","message":"You exceeded your quota"}}"#;
/// let answer = UpstreamAnswer::new(StatusCode::BAD_REQUEST, &headers, true)
///     .with_body(body, "You exceeded your quota");
/// let fired = rules.evaluate(&RuleInput::new(&answer, ChannelKind::OpenAi)).unwrap();
/// assert_eq!(fired.outcome, Outcome::Dead);
/// assert_eq!(&*fired.rule, "quota gone / rule 1");
/// ```
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Arc<[Rule]>,
    needs_error_type: bool,
}

#[derive(Debug)]
struct Rule {
    label: Arc<str>,
    conditions: Vec<Condition>,
    action: RuleAction,
    max_retries: Option<u32>,
    backoff: Duration,
    duration: Option<Duration>,
}

#[derive(Debug)]
struct Condition {
    field: ConditionField,
    negate: bool,
    test: Test,
}

#[derive(Debug)]
enum Test {
    /// Exact, ignoring ASCII case.
    Equals(String),
    /// Lowercase needle.
    Contains(String),
    Regex(Regex),
    Words(Vec<String>),
    Models(ModelFilter),
    Ranges(Vec<(u64, u64)>),
    Compare(ConditionOperator, u64),
}

/// What a rule sees of an attempt.
#[derive(Clone, Copy, Debug)]
pub struct RuleInput<'a> {
    /// The upstream's answer.
    pub answer: &'a UpstreamAnswer<'a>,
    /// The group's channel.
    pub channel: ChannelKind,
    /// The requested model, when known.
    pub model: Option<&'a str>,
    /// The attempt's number in its request, from 1.
    pub attempt: u32,
    /// The key's consecutive counted failures before this attempt.
    pub failure_count: u32,
}

impl<'a> RuleInput<'a> {
    /// The first attempt of a request on a healthy key, no model known.
    pub fn new(answer: &'a UpstreamAnswer<'a>, channel: ChannelKind) -> Self {
        Self {
            answer,
            channel,
            model: None,
            attempt: 1,
            failure_count: 0,
        }
    }
}

/// The rule that fired and what it decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleVerdict {
    /// `policy / rule` names.
    pub rule: Arc<str>,
    /// The action, as an outcome for the key pool and the retry policy.
    pub outcome: Outcome,
    /// The rule's cap on the request's remaining retries.
    pub max_retries: Option<u32>,
}

impl RuleSet {
    /// Compiles policies in evaluation order: `(policy name, its rules)`; inside a policy, rules
    /// run by ascending `priority`.
    pub fn compile<I>(policies: I) -> Result<Self, InvalidRule>
    where
        I: IntoIterator<Item = (String, Vec<RuleSpec>)>,
    {
        let mut rules = Vec::new();
        for (policy, mut specs) in policies {
            // Stable: equal priorities keep the written order (and so the labels below).
            let mut numbered: Vec<(usize, RuleSpec)> = specs.drain(..).enumerate().collect();
            numbered.sort_by_key(|(_, s)| s.priority);
            for (index, spec) in numbered {
                let name = if spec.name.trim().is_empty() {
                    format!("rule {}", index + 1)
                } else {
                    spec.name.trim().to_owned()
                };
                let label = if policy.is_empty() {
                    name.clone()
                } else {
                    format!("{policy} / {name}")
                };
                let rule = Rule::compile(label.into(), &spec)
                    .map_err(|reason| InvalidRule { rule: name, reason })?;
                rules.push(rule);
            }
        }
        let needs_error_type = rules
            .iter()
            .flat_map(|r| &r.conditions)
            .any(|c| c.field == ConditionField::ErrorType);
        Ok(Self {
            rules: rules.into(),
            needs_error_type,
        })
    }

    /// Checks one policy's rules without keeping them (for the admin API).
    pub fn check(specs: &[RuleSpec]) -> Result<(), InvalidRule> {
        Self::compile([(String::new(), specs.to_vec())]).map(drop)
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The first rule whose conditions all hold, and what it decides; `None` leaves the attempt to
    /// the classifier.
    pub fn evaluate(&self, input: &RuleInput<'_>) -> Option<RuleVerdict> {
        if self.rules.is_empty() {
            return None;
        }
        let error_type = if self.needs_error_type {
            input.answer.body.and_then(error_type)
        } else {
            None
        };
        let facts = Facts {
            input,
            error_type: error_type.as_deref(),
        };
        let rule = self
            .rules
            .iter()
            .find(|r| r.conditions.iter().all(|c| c.holds(&facts)))?;
        Some(RuleVerdict {
            rule: Arc::clone(&rule.label),
            outcome: rule.outcome(input.answer),
            max_retries: rule.max_retries,
        })
    }
}

struct Facts<'a> {
    input: &'a RuleInput<'a>,
    error_type: Option<&'a str>,
}

impl Facts<'_> {
    fn number(&self, field: ConditionField) -> u64 {
        match field {
            ConditionField::StatusCode => u64::from(self.input.answer.status.as_u16()),
            ConditionField::Attempt => u64::from(self.input.attempt),
            _ => u64::from(self.input.failure_count),
        }
    }

    fn text(&self, field: ConditionField) -> Option<&str> {
        match field {
            ConditionField::ErrorMessage => self.input.answer.message,
            ConditionField::Body => self.input.answer.body,
            ConditionField::ErrorType => self.error_type,
            ConditionField::Model => self.input.model,
            ConditionField::Channel => Some(self.input.channel.as_str()),
            _ => None,
        }
    }
}

impl Rule {
    fn compile(label: Arc<str>, spec: &RuleSpec) -> Result<Self, String> {
        let conditions = spec
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| Condition::compile(c).map_err(|e| format!("condition {}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let duration = spec.duration.as_ref().map(parse_duration).transpose()?;
        if duration.is_some() && spec.action != RuleAction::CoolDown {
            return Err(format!(
                "`duration` applies to cool_down, not {}",
                spec.action.as_str()
            ));
        }
        if spec.backoff_ms.is_some() && spec.action != RuleAction::RetrySame {
            return Err(format!(
                "`backoff_ms` applies to retry_same, not {}",
                spec.action.as_str()
            ));
        }
        if spec.max_retries.is_some() && !matches!(spec.action, RuleAction::Retry | RuleAction::RetrySame) {
            return Err(format!(
                "`max_retries` applies to retry and retry_same, not {}",
                spec.action.as_str()
            ));
        }
        let backoff = spec
            .backoff_ms
            .map_or(DEFAULT_RETRY_SAME_BACKOFF, Duration::from_millis)
            .min(MAX_RULE_DURATION);
        Ok(Self {
            label,
            conditions,
            action: spec.action,
            max_retries: spec.max_retries,
            backoff,
            duration,
        })
    }

    fn outcome(&self, answer: &UpstreamAnswer<'_>) -> Outcome {
        match self.action {
            RuleAction::Retry => Outcome::Failure { counted: false },
            RuleAction::RetrySame => Outcome::RetrySame(self.backoff),
            RuleAction::CoolDown => Outcome::CoolDown(match self.duration {
                Some(duration) => QuotaSignal::after(duration),
                None => quota_signal(answer.headers, answer.body, std::time::SystemTime::now()),
            }),
            RuleAction::Degrade => Outcome::Failure { counted: true },
            RuleAction::Invalidate => Outcome::Dead,
            RuleAction::Disable => Outcome::Disabled,
            RuleAction::Fail => Outcome::RequestError,
        }
    }
}

impl Condition {
    fn compile(spec: &ConditionSpec) -> Result<Self, String> {
        use ConditionOperator as Op;
        let field = spec.field;
        let one = || -> Result<&ScalarValue, String> {
            spec.value
                .as_ref()
                .ok_or_else(|| format!("`{}` needs a `value`", op_name(spec.operator)))
        };
        let many = || -> Result<Vec<&ScalarValue>, String> {
            let values: Vec<&ScalarValue> = spec.value.iter().chain(&spec.values).collect();
            if values.is_empty() {
                return Err(format!("`{}` needs `values`", op_name(spec.operator)));
            }
            Ok(values)
        };
        let (negate, test) = match (spec.operator, field.is_numeric()) {
            (Op::Equals | Op::NotEquals, true) => {
                let n = number(one()?)?;
                (spec.operator == Op::NotEquals, Test::Ranges(vec![(n, n)]))
            }
            (Op::In | Op::NotIn, true) => {
                let ranges = many()?.into_iter().map(range).collect::<Result<Vec<_>, _>>()?;
                (
                    spec.operator == Op::NotIn,
                    Test::Ranges(ranges.into_iter().flatten().collect()),
                )
            }
            (Op::Gt | Op::Lt | Op::Gte | Op::Lte, true) => {
                (false, Test::Compare(spec.operator, number(one()?)?))
            }
            (Op::Contains | Op::Regex, true) => {
                return Err(format!(
                    "`{}` compares text; {} is a number",
                    op_name(spec.operator),
                    field_name(field)
                ));
            }
            (Op::Gt | Op::Lt | Op::Gte | Op::Lte, false) => {
                return Err(format!(
                    "`{}` compares numbers; {} is text",
                    op_name(spec.operator),
                    field_name(field)
                ));
            }
            (Op::Equals | Op::NotEquals, false) => {
                (spec.operator == Op::NotEquals, Test::Equals(one()?.to_string()))
            }
            (Op::Contains, false) => {
                let needle = one()?.to_string().to_lowercase();
                if needle.is_empty() {
                    return Err("`contains` needs a non-empty value".into());
                }
                (false, Test::Contains(needle))
            }
            (Op::Regex, false) => {
                let source = one()?.to_string();
                let regex = regex::RegexBuilder::new(&source)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("invalid regular expression `{source}`: {e}"))?;
                (false, Test::Regex(regex))
            }
            (Op::In | Op::NotIn, false) => {
                let values: Vec<String> = many()?.into_iter().map(ToString::to_string).collect();
                let test = if field == ConditionField::Model {
                    Test::Models(ModelFilter::new(&values, [] as [&str; 0]).map_err(|e| e.to_string())?)
                } else {
                    Test::Words(values)
                };
                (spec.operator == Op::NotIn, test)
            }
        };
        Ok(Self { field, negate, test })
    }

    fn holds(&self, facts: &Facts<'_>) -> bool {
        let matched = if self.field.is_numeric() {
            let n = facts.number(self.field);
            match &self.test {
                Test::Ranges(ranges) => ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&n)),
                Test::Compare(op, v) => match op {
                    ConditionOperator::Gt => n > *v,
                    ConditionOperator::Lt => n < *v,
                    ConditionOperator::Gte => n >= *v,
                    _ => n <= *v,
                },
                _ => false,
            }
        } else {
            // A condition on something the attempt does not have (no body, no model) fails,
            // negated or not: `not_in` on an unknown model does not fire.
            let Some(text) = facts.text(self.field) else {
                return false;
            };
            match &self.test {
                Test::Equals(v) => text.eq_ignore_ascii_case(v),
                Test::Contains(needle) => contains_ignoring_case(text, needle),
                Test::Regex(regex) => regex.is_match(text),
                Test::Words(words) => words.iter().any(|w| text.eq_ignore_ascii_case(w)),
                Test::Models(filter) => filter.allows(text),
                _ => false,
            }
        };
        matched != self.negate
    }
}

/// Whether `haystack` contains the lowercase `needle`, ignoring case; allocates only for
/// non-ASCII text.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        return n.len() <= h.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    haystack.to_lowercase().contains(needle)
}

/// The error type named in an error body, if any.
fn error_type(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let error = value.get("error").unwrap_or(&value);
    ["type", "status", "code"]
        .into_iter()
        .filter_map(|field| error.get(field).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

fn number(value: &ScalarValue) -> Result<u64, String> {
    match value {
        ScalarValue::Number(n) => u64::try_from(*n).map_err(|_| format!("`{n}` is negative")),
        ScalarValue::Text(t) => t.trim().parse().map_err(|_| format!("`{t}` is not a number")),
    }
}

/// `429`, `"429"`, `"500-599"`, or a comma-separated list of them.
fn range(value: &ScalarValue) -> Result<Vec<(u64, u64)>, String> {
    let text = match value {
        ScalarValue::Number(_) => return number(value).map(|n| vec![(n, n)]),
        ScalarValue::Text(t) => t,
    };
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|part| match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (parse_u64(lo)?, parse_u64(hi)?);
                if lo > hi {
                    return Err(format!("range `{part}` is empty"));
                }
                Ok((lo, hi))
            }
            None => parse_u64(part).map(|n| (n, n)),
        })
        .collect()
}

fn parse_u64(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))
}

/// `90`, `"90"`, `"90s"`, `"5m"`, `"2h"`, `"1d"`; at most a week.
pub(crate) fn parse_duration(value: &ScalarValue) -> Result<Duration, String> {
    let seconds = match value {
        ScalarValue::Number(_) => number(value)?,
        ScalarValue::Text(text) => {
            let text = text.trim();
            let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
            let (digits, unit) = text.split_at(split);
            let n: u64 = digits
                .parse()
                .map_err(|_| format!("`{text}` is not a duration (such as 90s, 5m, 2h, 1d)"))?;
            let scale = match unit.trim() {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return Err(format!("`{text}` is not a duration (such as 90s, 5m, 2h, 1d)")),
            };
            n.saturating_mul(scale)
        }
    };
    let duration = Duration::from_secs(seconds);
    if duration.is_zero() || duration > MAX_RULE_DURATION {
        return Err(format!("duration {seconds}s is outside 1s to 7d"));
    }
    Ok(duration)
}

fn op_name(op: ConditionOperator) -> &'static str {
    match op {
        ConditionOperator::Equals => "equals",
        ConditionOperator::NotEquals => "not_equals",
        ConditionOperator::Contains => "contains",
        ConditionOperator::Regex => "regex",
        ConditionOperator::In => "in",
        ConditionOperator::NotIn => "not_in",
        ConditionOperator::Gt => "gt",
        ConditionOperator::Lt => "lt",
        ConditionOperator::Gte => "gte",
        ConditionOperator::Lte => "lte",
    }
}

fn field_name(field: ConditionField) -> &'static str {
    match field {
        ConditionField::StatusCode => "status_code",
        ConditionField::ErrorMessage => "error_message",
        ConditionField::Body => "body",
        ConditionField::ErrorType => "error_type",
        ConditionField::Model => "model",
        ConditionField::Channel => "channel",
        ConditionField::Attempt => "attempt",
        ConditionField::FailureCount => "failure_count",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;

    fn rules(json: &str) -> Result<RuleSet, InvalidRule> {
        RuleSet::compile([("p".to_owned(), serde_json::from_str(json).unwrap())])
    }

    fn fire(
        set: &RuleSet,
        status: u16,
        body: &str,
        model: Option<&str>,
        attempt: u32,
    ) -> Option<RuleVerdict> {
        let headers = HeaderMap::new();
        let message = super::super::upstream_message(body);
        let answer = UpstreamAnswer::new(StatusCode::from_u16(status).unwrap(), &headers, true)
            .with_body(body, &message);
        set.evaluate(&RuleInput {
            model,
            attempt,
            ..RuleInput::new(&answer, ChannelKind::Gemini)
        })
    }

    #[test]
    fn every_field_and_operator_matches_what_it_says() {
        let cases = [
            (
                r#"{"type":"status_code","operator":"in","values":[429,"500-503"]}"#,
                true,
            ),
            (
                r#"{"type":"status_code","operator":"not_in","values":["500-599"]}"#,
                false,
            ),
            (r#"{"type":"status_code","operator":"gte","value":500}"#, true),
            (r#"{"type":"status_code","operator":"lt","value":"500"}"#, false),
            (
                r#"{"type":"error_message","operator":"contains","value":"QUOTA exceeded"}"#,
                true,
            ),
            (
                r#"{"type":"error_message","operator":"equals","value":"quota exceeded for today"}"#,
                true,
            ),
            (
                r#"{"type":"body","operator":"regex","value":"\"status\":\\s*\"UNAVAILABLE\""}"#,
                true,
            ),
            (
                r#"{"type":"error_type","operator":"equals","value":"unavailable"}"#,
                true,
            ),
            (
                r#"{"type":"error_type","operator":"in","values":["RESOURCE_EXHAUSTED","x"]}"#,
                false,
            ),
            (
                r#"{"type":"model","operator":"in","values":["gemini-2.5-*"]}"#,
                true,
            ),
            (
                r#"{"type":"model","operator":"not_in","values":["gemini-*"]}"#,
                false,
            ),
            (r#"{"type":"channel","operator":"equals","value":"gemini"}"#, true),
            (r#"{"type":"attempt","operator":"gt","value":1}"#, true),
            (r#"{"type":"failure_count","operator":"equals","value":0}"#, true),
        ];
        let body = r#"{"error":{"code":503,"message":"Quota exceeded for today","status":"UNAVAILABLE"}}"#;
        for (condition, expected) in cases {
            let set = rules(&format!(r#"[{{"conditions":[{condition}],"action":"retry"}}]"#)).unwrap();
            let fired = fire(&set, 503, body, Some("gemini-2.5-flash"), 2);
            assert_eq!(fired.is_some(), expected, "{condition}");
        }
    }

    #[test]
    fn actions_map_to_outcomes() {
        let cases = [
            (r#""action":"retry""#, Outcome::Failure { counted: false }),
            (
                r#""action":"retry_same","backoff_ms":250"#,
                Outcome::RetrySame(Duration::from_millis(250)),
            ),
            (
                r#""action":"retry_same""#,
                Outcome::RetrySame(Duration::from_secs(1)),
            ),
            (
                r#""action":"cool_down","duration":"5m""#,
                Outcome::CoolDown(QuotaSignal::after(Duration::from_secs(300))),
            ),
            (r#""action":"degrade""#, Outcome::Failure { counted: true }),
            (r#""action":"invalidate""#, Outcome::Dead),
            (r#""action":"disable""#, Outcome::Disabled),
            (r#""action":"fail""#, Outcome::RequestError),
        ];
        for (action, outcome) in cases {
            let set = rules(&format!("[{{{action}}}]")).unwrap();
            assert_eq!(
                fire(&set, 400, "{}", None, 1).unwrap().outcome,
                outcome,
                "{action}"
            );
        }
    }

    #[test]
    fn a_cool_down_without_a_duration_follows_the_provider() {
        let set = rules(r#"[{"action":"cool_down"}]"#).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("42"));
        let answer = UpstreamAnswer::new(StatusCode::TOO_MANY_REQUESTS, &headers, true).with_body("{}", "");
        let fired = set
            .evaluate(&RuleInput::new(&answer, ChannelKind::OpenAi))
            .unwrap();
        assert_eq!(
            fired.outcome,
            Outcome::CoolDown(quota_signal(&headers, Some("{}"), std::time::SystemTime::now()))
        );
        let Outcome::CoolDown(signal) = fired.outcome else {
            unreachable!()
        };
        assert_eq!(signal.retry_in, Some(Duration::from_secs(42)));
    }

    #[test]
    fn rules_run_by_priority_and_the_first_match_wins() {
        let set = RuleSet::compile([
            (
                "first".to_owned(),
                serde_json::from_str(
                    r#"[{"name":"late","priority":5,"action":"fail"},
                        {"name":"early","priority":1,"conditions":[{"type":"status_code","operator":"equals","value":401}],"action":"invalidate"}]"#,
                )
                .unwrap(),
            ),
            ("second".to_owned(), serde_json::from_str(r#"[{"action":"retry"}]"#).unwrap()),
        ])
        .unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(&*fire(&set, 401, "{}", None, 1).unwrap().rule, "first / early");
        assert_eq!(&*fire(&set, 400, "{}", None, 1).unwrap().rule, "first / late");
        assert!(
            RuleSet::default()
                .evaluate(&RuleInput::new(
                    &UpstreamAnswer::new(StatusCode::BAD_REQUEST, &HeaderMap::new(), true),
                    ChannelKind::OpenAi
                ))
                .is_none()
        );
    }

    #[test]
    fn conditions_on_what_the_attempt_lacks_do_not_fire() {
        let set = rules(
            r#"[{"conditions":[{"type":"model","operator":"not_in","values":["gpt-*"]}],"action":"fail"}]"#,
        )
        .unwrap();
        assert!(fire(&set, 400, "{}", None, 1).is_none(), "no model known");
        assert!(fire(&set, 400, "{}", Some("claude-3"), 1).is_some());
        assert!(fire(&set, 400, "{}", Some("gpt-4o"), 1).is_none());
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_and_the_reason() {
        let cases = [
            (
                r#"[{"name":"r","conditions":[{"type":"body","operator":"regex","value":"(["}],"action":"fail"}]"#,
                "r",
                "invalid regular expression",
            ),
            (
                r#"[{"conditions":[{"type":"status_code","operator":"contains","value":"4"}],"action":"fail"}]"#,
                "rule 1",
                "compares text",
            ),
            (
                r#"[{"conditions":[{"type":"model","operator":"gt","value":1}],"action":"fail"}]"#,
                "rule 1",
                "compares numbers",
            ),
            (
                r#"[{"conditions":[{"type":"status_code","operator":"in","values":["599-500"]}],"action":"fail"}]"#,
                "rule 1",
                "is empty",
            ),
            (
                r#"[{"conditions":[{"type":"status_code","operator":"equals"}],"action":"fail"}]"#,
                "rule 1",
                "needs a `value`",
            ),
            (
                r#"[{"conditions":[{"type":"body","operator":"in"}],"action":"fail"}]"#,
                "rule 1",
                "needs `values`",
            ),
            (
                r#"[{"action":"fail","duration":"5m"}]"#,
                "rule 1",
                "applies to cool_down",
            ),
            (
                r#"[{"action":"cool_down","duration":"5 weeks"}]"#,
                "rule 1",
                "not a duration",
            ),
            (
                r#"[{"action":"cool_down","duration":"8d"}]"#,
                "rule 1",
                "outside 1s to 7d",
            ),
            (
                r#"[{"action":"degrade","max_retries":1}]"#,
                "rule 1",
                "applies to retry",
            ),
            (
                r#"[{"action":"invalidate","backoff_ms":10}]"#,
                "rule 1",
                "applies to retry_same",
            ),
        ];
        for (json, rule, reason) in cases {
            let err = rules(json).unwrap_err();
            assert_eq!(err.rule, rule, "{json}");
            assert!(err.reason.contains(reason), "{json}: {err}");
        }
        assert!(serde_json::from_str::<Vec<RuleSpec>>(r#"[{"action":"explode"}]"#).is_err());
        assert!(serde_json::from_str::<Vec<RuleSpec>>(r#"[{"action":"fail","when":1}]"#).is_err());
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        let d = |v: &str| parse_duration(&ScalarValue::Text(v.into())).unwrap().as_secs();
        assert_eq!(
            [d("90"), d("90s"), d("5m"), d("2h"), d("1d")],
            [90, 90, 300, 7200, 86_400]
        );
        assert_eq!(parse_duration(&ScalarValue::Number(30)).unwrap().as_secs(), 30);
        assert!(parse_duration(&ScalarValue::Number(0)).is_err());
    }

    #[test]
    fn ascii_containment_ignores_case_without_allocating() {
        assert!(contains_ignoring_case("Rate LIMIT reached", "rate limit"));
        assert!(!contains_ignoring_case("rate", "rate limit"));
        assert!(contains_ignoring_case("配额 QUOTA", "quota"));
    }
}
