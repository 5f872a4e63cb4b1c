//! `settings_table!`, the macro that turns [the settings table](super::table) into code. The
//! entry syntax and how to add a setting are described there; this module is the machinery.
//!
//! From the entries, in table order, it generates:
//!
//! - `SETTINGS`, the [`SettingMeta`](super::meta::SettingMeta) rows, each checked at compile
//!   time by [`SettingMeta::check`](super::meta::SettingMeta::check);
//! - `SystemSettings` (one typed field per entry), its `Default` (the table's defaults) and its
//!   `get`/`set` by key;
//! - from the entries with a `group` position only: `GROUP_CONFIG_ORDER` (sorted by position,
//!   every position used exactly once, checked at compile time), `GroupConfig` (one `Option`
//!   per entry) with `get`/`set`, `EffectiveConfig` and `SystemSettings::effective`, which
//!   merges them field by field.
//!
//! A private `Key` enum, one variant per entry in table order, indexes `SETTINGS` and makes
//! every `match` over the settings exhaustive.

/// See the [module documentation](self) and [the table](super::table).
macro_rules! settings_table {
    // Keeps the entries that have a group position, one entry per step.
    (@group [$($kept:tt)*] [$key:ident : $ty:ty, $position:literal] $($rest:tt)*) => {
        settings_table!(@group [$($kept)* [$key : $ty, $position]] $($rest)*);
    };
    (@group [$($kept:tt)*] [$key:ident : $ty:ty] $($rest:tt)*) => {
        settings_table!(@group [$($kept)*] $($rest)*);
    };
    // Every group-overridable entry has been collected.
    (@group [$([$key:ident : $ty:ty, $position:literal])*]) => {
        const GROUP_COUNT: usize = [$(stringify!($key)),*].len();

        /// The overridable settings in the order gpt-load lists them for groups
        /// (`GET /api/groups/config-options`), by the table's `group` positions.
        pub(crate) const GROUP_CONFIG_ORDER: [&str; GROUP_COUNT] = {
            let mut order = [""; GROUP_COUNT];
            $(order[$position] = stringify!($key);)*
            let mut position = 0;
            while position < GROUP_COUNT {
                assert!(
                    !order[position].is_empty(),
                    "the group positions must be 0, 1, 2, … with no gap and no repeat"
                );
                position += 1;
            }
            order
        };

        /// The settings a group overrides; `None` inherits the system value. Checked on write by
        /// [`validate_group_config`](super::validate_group_config), read back by
        /// [`GroupConfig::from_stored`].
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub(crate) struct GroupConfig {
            $(
                #[doc = concat!("The group's `", stringify!($key), "`; `None` inherits it.")]
                pub(crate) $key: Option<$ty>,
            )*
        }

        impl GroupConfig {
            /// The override of `key`, if the group has one.
            pub(crate) fn get(&self, key: &str) -> Option<$crate::settings::value::SettingValue> {
                #[allow(unreachable_patterns, reason = "every setting may one day be overridable")]
                match Key::find(key)? {
                    $(Key::$key => self.$key.as_ref().map($crate::settings::value::SettingType::to_value),)*
                    _ => None,
                }
            }

            /// Overrides `key` with a value checked for it by
            /// [`value::from_json`](super::value::from_json).
            pub(super) fn set(&mut self, key: &str, value: $crate::settings::value::SettingValue) {
                #[allow(unreachable_patterns, reason = "every setting may one day be overridable")]
                match Key::find(key) {
                    $(Some(Key::$key) => match <$ty as $crate::settings::value::SettingType>::from_value(value) {
                        Ok(value) => self.$key = Some(value),
                        Err(value) => unreachable!("the group config field {key} cannot hold {value:?}"),
                    },)*
                    _ => unreachable!("the group config field {key} cannot hold {value:?}"),
                }
            }
        }

        /// The settings a group's requests, clients and key checks run with. Built by
        /// [`SystemSettings::effective`]; cheap to clone (the failover matcher is shared). Read
        /// through the typed accessors in `effective.rs`.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub(crate) struct EffectiveConfig {
            $(pub(super) $key: $ty,)*
        }

        impl SystemSettings {
            /// The configuration of a group with the overrides `group`: field by field, the
            /// group's value if it has one, else the system value.
            pub(crate) fn effective(&self, group: &GroupConfig) -> EffectiveConfig {
                EffectiveConfig {
                    $($key: group.$key.as_ref().unwrap_or(&self.$key).clone(),)*
                }
            }
        }
    };

    // `$given` if there is one, else `$fallback`.
    (@or ; $fallback:expr) => { $fallback };
    (@or $given:expr ; $fallback:expr) => { $given };
    // `Some($value)`, or `None` without one.
    (@some) => { None };
    (@some $value:expr) => { Some($value) };

    // The table.
    (
        $(
            $(#[$doc:meta])*
            $key:ident : $ty:ty {
                default: $default:literal,
                $(min: $min:literal,)?
                $(required: $required:literal,)?
                $(rule: $rule:expr,)?
                category: $category:ident,
                $(group: $position:literal,)?
                en: ($name_en:literal, $description_en:literal $(,)?),
                zh: ($name_zh:literal, $description_zh:literal $(,)?) $(,)?
            }
        ),+ $(,)?
    ) => {
        /// Every setting, in table order: `Key::x as usize` is the index of `x` in [`SETTINGS`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(non_camel_case_types, reason = "each variant is named exactly like its setting")]
        enum Key {
            $($key,)+
        }

        impl Key {
            /// Every key, in table order.
            const ALL: [Key; SETTING_COUNT] = [$(Key::$key,)+];

            /// The setting named `key`.
            fn find(key: &str) -> Option<Self> {
                SETTINGS
                    .iter()
                    .position(|meta| meta.key == key)
                    .map(|index| Self::ALL[index])
            }

            /// Its row of the table.
            fn meta(self) -> &'static $crate::settings::meta::SettingMeta {
                &SETTINGS[self as usize]
            }
        }

        const SETTING_COUNT: usize = [$(stringify!($key)),+].len();

        /// Every setting, in table order (gpt-load's order, which is also the order of the
        /// settings page).
        pub(crate) const SETTINGS: [$crate::settings::meta::SettingMeta; SETTING_COUNT] = [$(
            $crate::settings::meta::SettingMeta {
                key: stringify!($key),
                kind: <$ty as $crate::settings::value::SettingType>::KIND,
                default: $default,
                min: settings_table!(@some $($min)?),
                required: settings_table!(@or $($required)? ; false),
                rule: settings_table!(@or $($rule)? ; <$ty as $crate::settings::value::SettingType>::RULE),
                category: $crate::settings::meta::Category::$category,
                group_position: settings_table!(@some $($position)?),
                name_en: $name_en,
                description_en: $description_en,
                name_zh: $name_zh,
                description_zh: $description_zh,
            },
        )+];

        const _: () = {
            let mut index = 0;
            while index < SETTING_COUNT {
                SETTINGS[index].check();
                index += 1;
            }
        };

        /// Every system setting, typed. Integers are `u32` at or above their minimum; timeouts
        /// are whole seconds (see the `Duration` accessors and
        /// [`EffectiveConfig`](EffectiveConfig)).
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub(crate) struct SystemSettings {
            $(
                $(#[$doc])*
                pub(crate) $key: $ty,
            )+
        }

        impl Default for SystemSettings {
            /// gpt-load's defaults, read from the table. A default that is not a valid value
            /// (`proxy_keys` has none: it is seeded with a generated key) leaves the type's
            /// empty value.
            fn default() -> Self {
                Self {
                    $($key: default_of(Key::$key),)+
                }
            }
        }

        impl SystemSettings {
            /// The value of `key`, if it is a setting.
            pub(crate) fn get(&self, key: &str) -> Option<$crate::settings::value::SettingValue> {
                use $crate::settings::value::SettingType as _;
                Some(match Key::find(key)? {
                    $(Key::$key => self.$key.to_value(),)+
                })
            }

            /// Sets `key` to a value checked for it by [`value::from_json`](super::value::from_json)
            /// or [`value::from_storage`](super::value::from_storage).
            pub(super) fn set(&mut self, key: &str, value: $crate::settings::value::SettingValue) {
                match Key::find(key) {
                    $(Some(Key::$key) => match <$ty as $crate::settings::value::SettingType>::from_value(value) {
                        Ok(value) => self.$key = value,
                        Err(value) => unreachable!("the setting {key} cannot hold {value:?}"),
                    },)+
                    None => unreachable!("the setting {key} cannot hold {value:?}"),
                }
            }
        }

        /// The table's default of `key`, or the type's empty value when it has none.
        fn default_of<T: $crate::settings::value::SettingType>(key: Key) -> T {
            let meta = key.meta();
            $crate::settings::value::from_storage(meta, meta.default)
                .ok()
                .and_then(|value| T::from_value(value).ok())
                .unwrap_or_default()
        }

        settings_table!(@group [] $([$key : $ty $(, $position)?])+);
    };
}

pub(super) use settings_table;
