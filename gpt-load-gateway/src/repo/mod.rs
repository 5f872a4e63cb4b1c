//! Every query of the gateway, written once for the three backends with
//! [`with_conn!`](crate::db::with_conn). Handlers and jobs call these; none of them writes SQL.

/// Narrows a boxed query with `$predicate` when `$value` is `Some(x)`: one optional filter of a
/// listing.
macro_rules! filter_some {
    ($query:ident, $value:expr, |$x:ident| $predicate:expr) => {
        if let Some($x) = $value {
            $query = $query.filter($predicate);
        }
    };
}

pub(crate) mod access_keys;
pub(crate) mod count;
pub(crate) mod groups;
pub(crate) mod keys;
pub(crate) mod policies;
pub(crate) mod reencrypt;
pub(crate) mod request_logs;
pub(crate) mod settings;
pub(crate) mod stats;
pub(crate) mod usage;

#[cfg(test)]
mod tests;
