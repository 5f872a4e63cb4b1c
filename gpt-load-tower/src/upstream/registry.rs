use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use http::{
    Uri,
    uri::{Authority, Scheme},
};

use crate::{
    clock,
    context::{AttemptUpstream, GroupName},
    group_map::GroupMap,
    path::{self, DotSegment},
    telemetry,
    wrr::SmoothWeighted,
};

/// When an upstream is taken out of rotation after transport failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive transport failures that eject an upstream; 0 disables ejection.
    pub after_failures: u32,
    /// How long an ejected upstream stays out.
    pub cool_down: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Self {
            after_failures: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// An upstream base URL that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidUpstream {
    url: String,
    reason: &'static str,
}

impl fmt::Display for InvalidUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid upstream url `{}`: {}", self.url, self.reason)
    }
}

impl std::error::Error for InvalidUpstream {}

/// Why no upstream address could be built for a request.
#[derive(Debug)]
pub(crate) enum TargetUriError {
    /// The forwarded path has a `.` or `..` segment.
    DotSegment(DotSegment),
    /// The joined address is not a valid URI.
    Invalid(http::Error),
}

impl From<DotSegment> for TargetUriError {
    fn from(err: DotSegment) -> Self {
        Self::DotSegment(err)
    }
}

impl From<http::Error> for TargetUriError {
    fn from(err: http::Error) -> Self {
        Self::Invalid(err)
    }
}

impl fmt::Display for TargetUriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DotSegment(err) => err.fmt(f),
            Self::Invalid(err) => err.fmt(f),
        }
    }
}

/// One upstream base URL of a group, with its weight and passive health.
pub struct Upstream {
    url: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    base_path: Box<str>,
    weight: u32,
    failures: AtomicU32,
    ejected_until: AtomicU64,
}

impl Upstream {
    /// Parses a base URL such as `https://api.openai.com` or `http://10.0.0.2:8080/v1beta/`.
    pub fn new(url: &str, weight: u32) -> Result<Self, InvalidUpstream> {
        let invalid = |reason| InvalidUpstream {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.trim().parse().map_err(|_| invalid("not a URL"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("missing scheme (http:// or https://)"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(invalid("scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("missing host"))?;
        if uri.query().is_some() {
            return Err(invalid("a base URL cannot have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').into();
        Ok(Self {
            url: url.trim().trim_end_matches('/').into(),
            scheme,
            authority,
            base_path,
            weight,
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        })
    }

    /// The base URL as configured (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL as a shared string, for records.
    pub fn shared_url(&self) -> Arc<str> {
        self.url.clone()
    }

    /// The configured weight (0 = never picked).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Whether passive health checking has taken this upstream out of rotation.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > clock::now_ms()
    }

    /// The upstream address for a client path and query, with the base path in front. A path
    /// with a dot segment is never joined, whoever let it through.
    pub(crate) fn target_uri(&self, forward_path: &str, query: Option<&str>) -> Result<Uri, TargetUriError> {
        path::reject_dot_segments(forward_path)?;
        let mut path = String::with_capacity(
            self.base_path.len() + forward_path.len() + query.map_or(0, |q| q.len() + 1) + 1,
        );
        path.push_str(&self.base_path);
        if !forward_path.starts_with('/') {
            path.push('/');
        }
        path.push_str(forward_path);
        if path.is_empty() {
            path.push('/');
        }
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        Ok(Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()?)
    }

    pub(crate) fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a transport failure; returns whether this failure ejected the upstream.
    pub(crate) fn record_failure(&self, ejection: Ejection) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if ejection.after_failures == 0 || failures < ejection.after_failures {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        self.ejected_until
            .store(clock::deadline_ms(ejection.cool_down), Ordering::Relaxed);
        true
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("weight", &self.weight)
            .field("ejected", &self.is_ejected())
            .finish()
    }
}

/// The upstream an attempt was sent to. Inserted into the request and response extensions by
/// [`UpstreamBalance`](super::UpstreamBalance).
///
/// An [`Error`](crate::Error) carries the plain [`AttemptUpstream`] made from it (`From`), not
/// the live upstream.
#[derive(Clone, Debug)]
pub struct UpstreamTarget(pub Arc<Upstream>);

impl UpstreamTarget {
    /// The base URL (never contains a key).
    pub fn url(&self) -> &str {
        self.0.url()
    }
}

impl From<&UpstreamTarget> for AttemptUpstream {
    fn from(target: &UpstreamTarget) -> Self {
        AttemptUpstream::new(target.0.shared_url())
    }
}

impl From<UpstreamTarget> for AttemptUpstream {
    fn from(target: UpstreamTarget) -> Self {
        Self::from(&target)
    }
}

struct GroupUpstreams {
    list: Box<[Arc<Upstream>]>,
    wrr: Mutex<SmoothWeighted>,
}

/// The upstream base URLs of every group, swappable at run time. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    groups: GroupMap<GroupUpstreams>,
    ejection: Ejection,
}

impl Upstreams {
    /// An empty registry with the default ejection policy (5 failures, 30 s).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry with its own ejection policy.
    pub fn with_ejection(ejection: Ejection) -> Self {
        Self {
            inner: Arc::new(Inner {
                ejection,
                ..Inner::default()
            }),
        }
    }

    /// The ejection policy.
    pub fn ejection(&self) -> Ejection {
        self.inner.ejection
    }

    /// Sets a group's upstreams as `(base URL, weight)` pairs, replacing the old ones (and the
    /// round-robin position).
    pub fn set_group<'a>(
        &self,
        group: GroupName,
        upstreams: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> Result<(), InvalidUpstream> {
        let list: Box<[Arc<Upstream>]> = upstreams
            .into_iter()
            .map(|(url, weight)| Upstream::new(url, weight).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let wrr = Mutex::new(SmoothWeighted::new(list.iter().map(|u| u.weight())));
        let entry = Arc::new(GroupUpstreams { list, wrr });
        self.inner.groups.update(|groups| groups.insert(group, entry));
        Ok(())
    }

    /// Removes a group's upstreams; returns whether it had any.
    pub fn remove_group(&self, group: &str) -> bool {
        self.inner.groups.update(|groups| groups.remove(group).is_some())
    }

    /// A group's upstreams.
    pub fn get(&self, group: &str) -> Vec<Arc<Upstream>> {
        self.inner
            .groups
            .load()
            .get(group)
            .map(|g| g.list.to_vec())
            .unwrap_or_default()
    }

    /// Picks the next upstream of `group` by smooth weighted round robin, skipping ejected ones
    /// (when every weighted upstream is ejected, they are all tried again rather than failing).
    pub fn pick(&self, group: &str) -> Option<Arc<Upstream>> {
        let groups = self.inner.groups.load();
        let g = groups.get(group)?;
        if let [only] = &*g.list {
            return (only.weight() > 0).then(|| only.clone());
        }
        let mut wrr = g.wrr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = wrr
            .pick(|i| !g.list[i].is_ejected())
            .or_else(|| wrr.pick(|_| true))?;
        Some(g.list[index].clone())
    }

    /// Records the outcome of a request to `upstream` for passive ejection.
    pub(crate) fn record(&self, group: &GroupName, upstream: &Upstream, transport_failed: bool) {
        if !transport_failed {
            upstream.record_success();
        } else if upstream.record_failure(self.inner.ejection) {
            telemetry::upstream_ejected(group);
            tracing::warn!(group = %group, upstream = %upstream.url(), "upstream ejected after consecutive transport failures");
        }
    }
}

impl fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = self.inner.groups.load();
        f.debug_map()
            .entries(groups.iter().map(|(k, v)| (k, &v.list)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = Upstream::new("https://api.openai.com/", 1).unwrap();
        assert_eq!(u.url(), "https://api.openai.com");
        assert_eq!(
            u.target_uri("/v1/chat/completions", Some("a=1")).unwrap(),
            "https://api.openai.com/v1/chat/completions?a=1"
        );
        let u = Upstream::new("http://127.0.0.1:9000/v1beta/", 1).unwrap();
        assert_eq!(
            u.target_uri("/models/x:generateContent", None).unwrap(),
            "http://127.0.0.1:9000/v1beta/models/x:generateContent"
        );
        assert_eq!(u.target_uri("/", None).unwrap(), "http://127.0.0.1:9000/v1beta/");
        assert_eq!(
            u.target_uri("v1", None).unwrap(),
            "http://127.0.0.1:9000/v1beta/v1"
        );
        for dotted in [
            "/v1/../admin",
            "/./v1",
            "/v1/%2e%2e/admin",
            "/v1/..%5cadmin",
            "/v1/..%2fadmin",
        ] {
            assert!(
                matches!(u.target_uri(dotted, None), Err(TargetUriError::DotSegment(_))),
                "{dotted}"
            );
        }
        assert_eq!(
            u.target_uri("/v1/files/file.v2", None).unwrap(),
            "http://127.0.0.1:9000/v1beta/v1/files/file.v2"
        );
        for bad in ["api.openai.com", "ftp://h", "http://h/?q=1", "http://"] {
            assert!(Upstream::new(bad, 1).is_err(), "{bad}");
        }
        assert!(Upstream::new("nope", 1).unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn weighted_picks_are_exact() {
        let ups = Upstreams::new();
        ups.set_group(
            "g".into(),
            [
                ("http://a", 5),
                ("http://b", 1),
                ("http://c", 1),
                ("http://off", 0),
            ],
        )
        .unwrap();
        let seq: Vec<String> = (0..14).map(|_| ups.pick("g").unwrap().url().to_owned()).collect();
        let expect = [
            "http://a", "http://a", "http://b", "http://a", "http://c", "http://a", "http://a",
        ];
        assert_eq!(seq[..7], expect);
        assert_eq!(seq[7..], expect);
    }

    #[test]
    fn ejects_after_consecutive_failures_and_fails_open() {
        let ups = Upstreams::with_ejection(Ejection {
            after_failures: 2,
            cool_down: Duration::from_secs(60),
        });
        ups.set_group("g".into(), [("http://a", 1), ("http://b", 1)])
            .unwrap();
        let a = ups.get("g")[0].clone();
        let g: GroupName = "g".into();
        ups.record(&g, &a, true);
        ups.record(&g, &a, false);
        ups.record(&g, &a, true);
        assert!(!a.is_ejected(), "a success in between resets the count");
        ups.record(&g, &a, true);
        assert!(a.is_ejected());
        for _ in 0..4 {
            assert_eq!(ups.pick("g").unwrap().url(), "http://b");
        }
        let b = ups.get("g")[1].clone();
        ups.record(&g, &b, true);
        ups.record(&g, &b, true);
        assert!(ups.pick("g").is_some(), "all ejected: still try one");
    }

    #[test]
    fn unknown_or_zero_weight_groups_have_no_upstream() {
        let ups = Upstreams::new();
        assert!(ups.pick("g").is_none());
        ups.set_group("g".into(), [("http://a", 0)]).unwrap();
        assert!(ups.pick("g").is_none());
        assert!(ups.remove_group("g"));
        assert!(ups.get("g").is_empty());
    }
}
