//! [`EffectiveConfig`] (declared, with
//! [`SystemSettings::effective`](super::SystemSettings::effective), by
//! [the settings table](super::table)): what one group actually uses — its override, else the
//! system value (which is the stored value, else the default). Its typed accessors are here.

use std::{sync::Arc, time::Duration};

use gpt_load_tower::{
    blacklist::HealthSettings,
    keys::{Backoff, KeyLimits},
    limit::GroupLimits,
    rewrite::{InvalidModelPattern, ModelFilter},
};

use super::EffectiveConfig;

fn seconds(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

impl EffectiveConfig {
    /// Longest a non-streaming request may take, start to finish.
    pub(crate) fn request_timeout(&self) -> Duration {
        seconds(self.request_timeout)
    }

    /// Longest to open a connection to the upstream.
    pub(crate) fn connect_timeout(&self) -> Duration {
        seconds(self.connect_timeout)
    }

    /// How long an idle pooled connection is kept.
    pub(crate) fn idle_conn_timeout(&self) -> Duration {
        seconds(self.idle_conn_timeout)
    }

    /// Longest wait for the response head after the request was sent.
    pub(crate) fn response_header_timeout(&self) -> Duration {
        seconds(self.response_header_timeout)
    }

    /// Longest pause between two chunks of a streamed response.
    pub(crate) fn stream_idle_timeout(&self) -> Duration {
        seconds(self.stream_idle_timeout)
    }

    /// gpt-load's cap on idle connections in total; the client applies it to each upstream host
    /// (see `ClientSettings::from_effective`).
    pub(crate) fn max_idle_conns(&self) -> u32 {
        self.max_idle_conns
    }

    /// Idle connections kept per upstream host.
    pub(crate) fn max_idle_conns_per_host(&self) -> u32 {
        self.max_idle_conns_per_host
    }

    /// The proxy for upstream requests; `None` = use the proxy environment variables.
    pub(crate) fn proxy_url(&self) -> Option<&str> {
        Some(self.proxy_url.as_str()).filter(|url| !url.is_empty())
    }

    /// Retries on another key after a failed attempt.
    pub(crate) fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Consecutive failures that blacklist a key; 0 = never.
    #[cfg(test)]
    pub(crate) fn blacklist_threshold(&self) -> u32 {
        self.blacklist_threshold
    }

    /// The failover statuses as written.
    pub(crate) fn failover_status_spec(&self) -> &str {
        self.failover_status_codes.spec()
    }

    /// The failover status spec and its matcher.
    #[cfg(test)]
    pub(crate) fn failover_status_codes(&self) -> &super::value::FailoverCodes {
        &self.failover_status_codes
    }

    /// The statuses that fail an attempt.
    #[cfg(test)]
    pub(crate) fn failover_matcher(&self) -> &Arc<gpt_load_tower::blacklist::StatusMatcher> {
        self.failover_status_codes.matcher()
    }

    /// The failover, blacklist and cool-down rules for the key health layer.
    pub(crate) fn health_settings(&self) -> HealthSettings {
        HealthSettings {
            failover: Arc::clone(self.failover_status_codes.matcher()),
            blacklist_threshold: self.blacklist_threshold,
            cool_down: self.cool_down(),
            rules: Default::default(),
            retry_empty_replies: self.retry_empty_replies,
        }
    }

    /// How long a rate-limited key rests: from the minimum, doubling, up to the maximum.
    pub(crate) fn cool_down(&self) -> Backoff {
        Backoff::new(
            seconds(self.cool_down_min_seconds),
            seconds(self.cool_down_max_seconds),
        )
    }

    /// The models the group serves, compiled (the stored text was checked when it was saved).
    pub(crate) fn model_filter(&self) -> Result<ModelFilter, InvalidModelPattern> {
        ModelFilter::parse(&self.model_include, &self.model_exclude)
    }

    /// How often a degraded key is selected relative to a healthy one (0.01 to 1).
    pub(crate) fn degraded_key_weight(&self) -> f64 {
        f64::from(self.degraded_key_weight.clamp(1, 100)) / 100.0
    }

    /// Whether OpenAI-format streams are asked to report their usage.
    pub(crate) fn include_stream_usage(&self) -> bool {
        self.include_stream_usage
    }

    /// The limits each key of the group gets.
    pub(crate) fn key_limits(&self) -> KeyLimits {
        KeyLimits::new()
            .rpm(self.key_rpm)
            .rpd(self.key_rpd)
            .max_concurrency(self.key_max_concurrency)
            .tpm(self.key_tpm)
    }

    /// Output tokens reserved for a request that names no output cap.
    pub(crate) fn tpm_reserve_tokens(&self) -> u64 {
        u64::from(self.tpm_reserve_tokens)
    }

    /// The group's own request limits and how long a request waits for room.
    pub(crate) fn group_limits(&self) -> GroupLimits {
        GroupLimits::new()
            .rpm(self.group_rpm)
            .max_concurrency(self.group_max_concurrency)
            .tpm(self.group_tpm)
            .queue_timeout(Duration::from_millis(u64::from(self.limit_queue_timeout_ms)))
    }

    /// Whether keys added to the group start pending until validated.
    pub(crate) fn validate_new_keys(&self) -> bool {
        self.validate_new_keys
    }

    /// Whether a pending key serves when no validated key can.
    pub(crate) fn pending_keys_as_fallback(&self) -> bool {
        self.pending_keys_as_fallback
    }

    /// How often the group's blacklisted keys are validated again.
    pub(crate) fn key_validation_interval(&self) -> Duration {
        seconds(self.key_validation_interval_minutes).saturating_mul(60)
    }

    /// Keys validated at the same time.
    pub(crate) fn key_validation_concurrency(&self) -> u32 {
        self.key_validation_concurrency
    }

    /// Longest one key validation request may take.
    pub(crate) fn key_validation_timeout(&self) -> Duration {
        seconds(self.key_validation_timeout_seconds)
    }

    /// Whether request bodies are kept in the request log.
    pub(crate) fn enable_request_body_logging(&self) -> bool {
        self.enable_request_body_logging
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::settings::{GroupConfig, SystemSettings, validate_group_config};

    fn group(config: Value) -> GroupConfig {
        let Value::Object(map) = config else {
            panic!("object")
        };
        validate_group_config(&map).unwrap()
    }

    #[test]
    fn without_overrides_the_system_values_apply() {
        let system = SystemSettings::default();
        let effective = system.effective(&GroupConfig::default());
        assert_eq!(effective.request_timeout(), Duration::from_secs(600));
        assert_eq!(effective.connect_timeout(), Duration::from_secs(15));
        assert_eq!(effective.idle_conn_timeout(), Duration::from_secs(120));
        assert_eq!(effective.response_header_timeout(), Duration::from_secs(600));
        assert_eq!(effective.stream_idle_timeout(), Duration::from_secs(300));
        assert_eq!(
            (effective.max_idle_conns(), effective.max_idle_conns_per_host()),
            (100, 50)
        );
        assert_eq!(effective.proxy_url(), None);
        assert_eq!((effective.max_retries(), effective.blacklist_threshold()), (3, 3));
        assert_eq!(effective.failover_status_codes().spec(), "400-403,405-999");
        assert!(!effective.failover_matcher().matches(404) && effective.failover_matcher().matches(401));
        assert_eq!(effective.key_validation_interval(), Duration::from_secs(3600));
        assert_eq!(effective.key_validation_concurrency(), 10);
        assert_eq!(effective.key_validation_timeout(), Duration::from_secs(20));
        assert!(!effective.enable_request_body_logging());
    }

    #[test]
    fn group_beats_system_beats_default() {
        let mut system = SystemSettings::default();
        let Value::Object(update) =
            json!({"max_retries": 7, "request_timeout": 100, "proxy_url": "http://sys:8080"})
        else {
            unreachable!()
        };
        crate::settings::system::validate_update(&update)
            .unwrap()
            .apply(&mut system);
        let effective = system.effective(&group(json!({
            "request_timeout": 5,
            "failover_status_codes": "",
            "proxy_url": "",
            "enable_request_body_logging": true,
            "stream_idle_timeout": 9,
        })));
        assert_eq!(effective.request_timeout(), Duration::from_secs(5), "group");
        assert_eq!(effective.max_retries(), 7, "system");
        assert_eq!(effective.connect_timeout(), Duration::from_secs(15), "default");
        assert_eq!(effective.stream_idle_timeout(), Duration::from_secs(9));
        assert_eq!(
            effective.proxy_url(),
            None,
            "an empty group proxy overrides the system proxy"
        );
        assert!(effective.enable_request_body_logging());
        assert!(
            !effective.failover_matcher().matches(500),
            "empty spec: no status failover"
        );
        let health = effective.health_settings();
        assert_eq!(health.blacklist_threshold, 3);
        assert!(Arc::ptr_eq(&health.failover, effective.failover_matcher()));

        let inherited = system.effective(&group(json!({"max_retries": null})));
        assert_eq!(inherited.proxy_url(), Some("http://sys:8080"));
        assert!(
            Arc::ptr_eq(
                inherited.failover_matcher(),
                system.failover_status_codes.matcher()
            ),
            "the system matcher is shared, not re-parsed"
        );
        assert_eq!(system.effective(&group(Value::Object(Map::new()))), inherited);
    }
}
