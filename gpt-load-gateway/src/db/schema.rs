//! The tables, as diesel sees them (gpt-load's names and columns, plus ours).

diesel::table! {
    system_settings (id) {
        id -> BigInt,
        setting_key -> Text,
        setting_value -> Text,
        description -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    groups (id) {
        id -> BigInt,
        name -> Text,
        display_name -> Text,
        proxy_keys -> Text,
        description -> Text,
        group_type -> Text,
        upstreams -> Text,
        validation_endpoint -> Text,
        channel_type -> Text,
        sort -> Integer,
        test_model -> Text,
        param_overrides -> Text,
        config -> Text,
        header_rules -> Text,
        model_redirect_rules -> Text,
        model_redirect_strict -> Bool,
        last_validated_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    group_sub_groups (id) {
        id -> BigInt,
        group_id -> BigInt,
        sub_group_id -> BigInt,
        weight -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        key_value -> Text,
        key_hash -> Text,
        group_id -> BigInt,
        status -> Text,
        notes -> Text,
        request_count -> BigInt,
        failure_count -> BigInt,
        last_used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        state -> Text,
        cooling_until -> Nullable<Timestamp>,
        backoff_level -> Integer,
        last_error_message -> Text,
        last_failure_at -> Nullable<Timestamp>,
        last_success_at -> Nullable<Timestamp>,
        last_validated_at -> Nullable<Timestamp>,
        key_limits -> Nullable<Text>,
    }
}

diesel::table! {
    request_logs (id) {
        id -> Text,
        timestamp -> Timestamp,
        group_id -> BigInt,
        group_name -> Text,
        parent_group_id -> BigInt,
        parent_group_name -> Text,
        key_value -> Text,
        key_hash -> Text,
        model -> Text,
        is_success -> Bool,
        source_ip -> Text,
        status_code -> Integer,
        request_path -> Text,
        duration -> BigInt,
        error_message -> Text,
        user_agent -> Text,
        request_type -> Text,
        upstream_addr -> Text,
        is_stream -> Bool,
        request_body -> Text,
        key_id -> Nullable<BigInt>,
        attempt -> Integer,
        ttfb_ms -> Nullable<BigInt>,
        request_id -> Text,
        prompt_tokens -> Nullable<BigInt>,
        completion_tokens -> Nullable<BigInt>,
        cached_tokens -> Nullable<BigInt>,
        reasoning_tokens -> Nullable<BigInt>,
        total_tokens -> Nullable<BigInt>,
        access_key_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    usage_hourly (id) {
        id -> BigInt,
        time -> Timestamp,
        group_id -> BigInt,
        key_id -> BigInt,
        model -> Text,
        access_key_id -> BigInt,
        requests -> BigInt,
        failures -> BigInt,
        prompt_tokens -> BigInt,
        completion_tokens -> BigInt,
        cached_tokens -> BigInt,
        reasoning_tokens -> BigInt,
        total_tokens -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    group_hourly_stats (id) {
        id -> BigInt,
        time -> Timestamp,
        group_id -> BigInt,
        success_count -> BigInt,
        failure_count -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    policies (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        #[sql_name = "type"]
        policy_type -> Text,
        config -> Text,
        priority -> Integer,
        is_active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    group_policies (group_id, policy_id) {
        group_id -> BigInt,
        policy_id -> BigInt,
        priority -> Integer,
        is_active -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    access_keys (id) {
        id -> BigInt,
        name -> Text,
        key_hash -> Text,
        key_hint -> Text,
        allowed_groups -> Text,
        allowed_models -> Text,
        rpm -> BigInt,
        tpm -> BigInt,
        daily_token_quota -> BigInt,
        monthly_token_quota -> BigInt,
        expires_at -> Nullable<Timestamp>,
        enabled -> Bool,
        notes -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(api_keys -> groups (group_id));
diesel::joinable!(group_policies -> policies (policy_id));
diesel::allow_tables_to_appear_in_same_query!(
    system_settings,
    groups,
    group_sub_groups,
    api_keys,
    request_logs,
    usage_hourly,
    group_hourly_stats,
    policies,
    group_policies,
    access_keys
);
