use chrono::NaiveDateTime;
use gpt_load_tower::channel::ChannelKind;

use super::*;

const KEY: &str = "sk-gla-test-0123456789abcdef";

fn row(id: i64, key: &str) -> AccessKeyRow {
    let at = NaiveDateTime::default();
    AccessKeyRow {
        id,
        name: format!("key {id}"),
        key_hash: hash_hex(key),
        key_hint: hint(key),
        allowed_groups: "[]".to_owned(),
        allowed_models: "[]".to_owned(),
        rpm: 0,
        tpm: 0,
        daily_token_quota: 0,
        monthly_token_quota: 0,
        expires_at: None,
        enabled: true,
        notes: String::new(),
        created_at: at,
        updated_at: at,
    }
}

fn names() -> HashMap<i64, GroupName> {
    HashMap::from([(1, GroupName::from("one")), (2, GroupName::from("two"))])
}

fn keys(rows: &[AccessKeyRow]) -> AccessKeys {
    let keys = AccessKeys::default();
    keys.store(rows, &names());
    keys
}

fn admit(keys: &AccessKeys, group: &str, key: &str) -> Result<Principal, Error> {
    let name = GroupName::from(group);
    let known = ["one", "two"]
        .contains(&group)
        .then_some((&name, ChannelKind::OpenAi));
    keys.admit(group, known, key).expect("an access key")
}

#[test]
fn keys_are_random_prefixed_and_shown_only_as_a_hint() {
    let (a, b) = (generate(), generate());
    assert_ne!(a, b);
    assert!(
        a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43,
        "{a}"
    );
    assert_eq!(hash_hex(&a).len(), 64);
    assert_eq!(hint(KEY), "sk-gla-tes…cdef");
    assert_eq!(hint("short"), "*****");
}

#[test]
fn calendar_periods_and_their_ends() {
    // 2026-12-31T23:00:00Z: one hour to tomorrow and to next month.
    let at = 1_798_758_000_000;
    let c = Calendar::at(at);
    assert_eq!(c.until_tomorrow, Duration::from_secs(3600));
    assert_eq!(c.until_next_month, Duration::from_secs(3600));
    let next = Calendar::at(at + 3_600_000);
    assert_eq!((next.day, next.month), (c.day + 1, c.month + 1));
    // Mid-month: the month ends later than the day.
    let mid = Calendar::at(at - 15 * DAY_MS);
    assert!(mid.until_next_month > mid.until_tomorrow);
    assert_eq!(mid.month, c.month);
}

#[test]
fn period_totals_reset_with_the_period_and_take_the_higher_count() {
    let total = PeriodTotal::default();
    total.add(5, 10);
    total.add(5, 5);
    assert_eq!(total.in_period(5), 15);
    total.observe(5, 12);
    assert_eq!(total.in_period(5), 15, "the node's own count is ahead");
    total.observe(5, 40);
    assert_eq!(total.in_period(5), 40, "other nodes' requests raise it");
    assert_eq!(total.in_period(6), 0);
    total.add(6, 3);
    assert_eq!(total.in_period(6), 3);
}

#[test]
fn switch_expiry_groups_and_models_decide_admission() {
    let mut limited = row(1, KEY);
    limited.allowed_groups = "[1]".to_owned();
    limited.allowed_models = r#"["gpt-4o*"]"#.to_owned();
    let mut off = row(2, "sk-gla-off");
    off.enabled = false;
    let mut old = row(3, "sk-gla-old");
    old.expires_at = Some(NaiveDateTime::default());
    let keys = keys(&[limited, off, old, row(4, "sk-gla-any")]);

    let principal = admit(&keys, "one", KEY).unwrap();
    assert_eq!(principal.access_key(), Some(AccessKeyId(1)));
    assert!(principal.allows_model("gpt-4o-mini") && !principal.allows_model("o3"));
    assert_eq!(admit(&keys, "two", KEY).unwrap_err().kind(), ErrorKind::Forbidden);
    assert_eq!(
        admit(&keys, "nope", KEY).unwrap_err().kind(),
        ErrorKind::Forbidden
    );
    let off = admit(&keys, "one", "sk-gla-off").unwrap_err();
    assert_eq!(
        (off.kind(), off.message()),
        (ErrorKind::Unauthorized, "access key is disabled")
    );
    let old = admit(&keys, "one", "sk-gla-old").unwrap_err();
    assert_eq!(
        (old.kind(), old.message()),
        (ErrorKind::Unauthorized, "access key has expired")
    );
    // A key for every group learns which do not exist, like a global proxy key.
    assert!(admit(&keys, "two", "sk-gla-any").unwrap().allows_model("o3"));
    assert_eq!(
        admit(&keys, "nope", "sk-gla-any").unwrap_err().kind(),
        ErrorKind::UnknownGroup
    );
    assert!(keys.admit("one", None, "sk-gla-unknown").is_none());
}

#[test]
fn rate_token_and_quota_limits_refuse_with_their_names() {
    let mut metered = row(1, KEY);
    metered.rpm = 2;
    metered.tpm = 100;
    metered.daily_token_quota = 150;
    metered.monthly_token_quota = 1_000;
    let keys = keys(&[metered.clone()]);
    let limit = |r: Result<Principal, Error>| r.unwrap_err().limit();

    assert!(admit(&keys, "one", KEY).is_ok());
    keys.settle(AccessKeyId(1), 100);
    assert_eq!(limit(admit(&keys, "one", KEY)), Some(limit_names::TPM));
    assert_eq!(keys.usage(1).tokens_last_minute, 100);

    // An edit keeps what was used; without tpm the rate limit is next.
    metered.tpm = 0;
    keys.store(&[metered.clone()], &names());
    assert!(admit(&keys, "one", KEY).is_ok());
    assert_eq!(limit(admit(&keys, "one", KEY)), Some(limit_names::RPM));

    metered.rpm = 0;
    keys.store(&[metered.clone()], &names());
    keys.settle(AccessKeyId(1), 50);
    assert_eq!(limit(admit(&keys, "one", KEY)), Some(limit_names::DAILY_TOKENS));
    let usage = keys.usage(1);
    assert_eq!((usage.tokens_today, usage.tokens_this_month), (150, 150));

    // Other nodes' usage, read from the database, counts too.
    metered.daily_token_quota = 0;
    keys.store(&[metered], &names());
    assert!(admit(&keys, "one", KEY).is_ok());
    keys.observe_totals(SystemTime::now(), &[(1, 150, 1_000)]);
    assert_eq!(limit(admit(&keys, "one", KEY)), Some(limit_names::MONTHLY_TOKENS));
    let err = admit(&keys, "one", KEY).unwrap_err();
    assert!(
        err.retry_after()
            .is_some_and(|wait| wait <= Duration::from_secs(31 * 86_400))
    );
}

#[test]
fn a_cluster_node_admits_its_share_of_the_rate() {
    let mut metered = row(1, KEY);
    metered.rpm = 4;
    let keys = keys(&[metered]);
    keys.set_nodes(2);
    assert!(admit(&keys, "one", KEY).is_ok());
    assert!(admit(&keys, "one", KEY).is_ok());
    assert!(
        admit(&keys, "one", KEY).is_err(),
        "two of four on each of two nodes"
    );
}

#[test]
fn legacy_keys_first_then_access_keys() {
    use gpt_load_tower::auth::ProxyKeyTable;

    let proxy = ProxyKeys::default();
    proxy
        .legacy
        .store(ProxyKeyTable::new().global(["sk-legacy"]).group(
            "one",
            ChannelKind::OpenAi,
            Vec::<&str>::new(),
        ));
    proxy.access.store(&[row(1, KEY)], &names());
    assert_eq!(proxy.validate("one", "sk-legacy").unwrap().access_key(), None);
    assert_eq!(
        proxy.validate("one", KEY).unwrap().access_key(),
        Some(AccessKeyId(1))
    );
    assert_eq!(
        proxy.validate("one", "sk-wrong").unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
    assert!(proxy.permits("one", KEY) && !proxy.permits("two", KEY));
}
