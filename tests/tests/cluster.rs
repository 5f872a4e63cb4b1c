//! Cluster mode with real processes: three gateway nodes (the built binary) on one PostgreSQL
//! or MariaDB database and one Redis, each test with a database and a Redis key prefix of its
//! own, and an in-process mock upstream.
//!
//! The lease is 3 s and the reconcile interval 1 s here, so that failover runs in seconds.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use gpt_load_e2e::{
    Behaviour, GatewayCommand, GatewayProcess, MockUpstream,
    servers::{OwnRedis, Server, ServerDatabase, redis_url, unique_name},
};
use serde_json::{Value, json};

const AUTH_KEY: &str = "sk-cluster-admin-0123456789";
const PROXY_KEY: &str = "sk-cluster-proxy-0123456789";
const UPSTREAM_KEY: &str = "sk-cluster-upstream-0001";
const LEASE: Duration = Duration::from_secs(3);
/// `CLUSTER_RECONCILE_SECONDS` of every node here.
const RECONCILE: Duration = Duration::from_secs(1);
/// How soon a change made on one node must serve on the others.
const PROPAGATION: Duration = Duration::from_secs(2);
/// How long a node may take to start (a debug build under a loaded CI machine).
const START: Duration = Duration::from_secs(60);

/// One gateway process, killed on drop; its log is printed when the test fails.
struct Node {
    name: &'static str,
    process: GatewayProcess,
}

/// What every node of one test shares.
struct Shared {
    dsn: String,
    redis: String,
    prefix: String,
}

impl Node {
    fn start(name: &'static str, shared: &Shared, extra: &[(&str, &str)]) -> Node {
        let process = GatewayCommand::new(&format!("cluster_{name}"), AUTH_KEY)
            .env("DATABASE_DSN", &shared.dsn)
            .env("REDIS_DSN", &shared.redis)
            .env("REDIS_KEY_PREFIX", &shared.prefix)
            .env("CLUSTER_NODE_ID", name)
            .env("CLUSTER_LEASE_SECONDS", LEASE.as_secs().to_string())
            .env("CLUSTER_RECONCILE_SECONDS", RECONCILE.as_secs().to_string())
            .env("LOG_LEVEL", "debug")
            .envs(extra.iter().copied())
            .patience(START)
            .start();
        Node { name, process }
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// One HTTP/1.1 exchange on a fresh connection: the status and the body. A body given as
    /// text (which may not parse) goes through [`GatewayProcess::http`].
    fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        self.process.http(method, path, bearer, &body)
    }

    /// An admin API call: the status and the JSON answer.
    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, text) = self
            .http(method, &format!("/api{path}"), Some(AUTH_KEY), body.as_ref())
            .unwrap_or_else(|err| panic!("{method} {path} on {}: {err}", self.name));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A chat completion through `group` with `proxy_key`: the status (0 when no answer).
    fn chat(&self, group: &str, proxy_key: &str) -> u16 {
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
        self.http(
            "POST",
            &format!("/proxy/{group}/v1/chat/completions"),
            Some(proxy_key),
            Some(&body),
        )
        .map_or(0, |(status, _)| status)
    }

    /// Whether the node serves `group`: a body that is not JSON is refused with `400` there,
    /// before any key is chosen, and with `404` where the group is unknown.
    fn knows_group(&self, group: &str, proxy_key: &str) -> bool {
        self.process
            .http(
                "POST",
                &format!("/proxy/{group}/v1/chat/completions"),
                Some(proxy_key),
                "{not json",
            )
            .is_ok_and(|(status, _)| status == 400)
    }

    /// The sum of a Prometheus counter's series whose labels include every one of `labels`.
    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (_, text) = self.http("GET", "/metrics", None, None).unwrap_or_default();
        text.lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter(|line| {
                let series = line.rsplit_once(' ').map_or("", |(series, _)| series);
                (series == name || series.starts_with(&format!("{name}{{")))
                    && labels.iter().all(|label| series.contains(label))
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// `GET /api/cluster/status`'s data.
    fn status(&self) -> Value {
        let (status, body) = self.api("GET", "/cluster/status", None);
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    fn role(&self) -> String {
        self.status()["role"].as_str().unwrap_or_default().to_owned()
    }

    fn kill(&mut self) {
        self.process.kill();
    }
}

/// Polls `check` every 50 ms until it holds; the time it took, or `None` after `limit`.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The database, Redis and mock upstream of one test; `None` when a server is not here.
fn setup(
    server: Server,
    test: &str,
) -> Option<(ServerDatabase, Shared, tokio::runtime::Runtime, MockUpstream)> {
    let db = ServerDatabase::create(server, test)?;
    let (shared, runtime, mock) = shared_over(&db, redis_url(test)?, test);
    Some((db, shared, runtime, mock))
}

/// As [`setup`] on PostgreSQL, with a `redis-server` of the test's own (speaking TLS only when
/// `tls`), which the test may stop and start.
fn setup_own_redis(
    test: &str,
    tls: bool,
) -> Option<(
    ServerDatabase,
    OwnRedis,
    Shared,
    tokio::runtime::Runtime,
    MockUpstream,
)> {
    let db = ServerDatabase::create(Server::Postgres, test)?;
    let redis = if tls {
        OwnRedis::start_tls(test)?
    } else {
        OwnRedis::start_new(test)?
    };
    let (shared, runtime, mock) = shared_over(&db, redis.url(), test);
    Some((db, redis, shared, runtime, mock))
}

/// What the nodes of `test` share over `db` and the Redis at `redis`, and a mock upstream.
fn shared_over(
    db: &ServerDatabase,
    redis: String,
    test: &str,
) -> (Shared, tokio::runtime::Runtime, MockUpstream) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockUpstream::start()).unwrap();
    let shared = Shared {
        dsn: db.dsn(),
        redis,
        prefix: unique_name(test),
    };
    (shared, runtime, mock)
}

/// Starts `a` alone until it leads (it migrates the database), then the others.
fn start_cluster(shared: &Shared, slave_c: bool) -> (Node, Node, Node) {
    let a = Node::start("a", shared, &[]);
    assert!(
        within(START, || a.role() == "leader").is_some(),
        "the first node leads:\n{}",
        a.log()
    );
    let b = Node::start("b", shared, &[]);
    let c = Node::start("c", shared, if slave_c { &[("IS_SLAVE", "true")] } else { &[] });
    (a, b, c)
}

fn changes_on_one_node_reach_the_others(server: Server, test: &str) {
    let Some((_db, shared, _runtime, mock)) = setup(server, test) else {
        return;
    };
    let (a, b, c) = start_cluster(&shared, false);

    // Every node sees the same three nodes and the one leader.
    for node in [&a, &b, &c] {
        let status = node.status();
        assert_eq!(status["mode"], "cluster", "{status}");
        assert_eq!(status["redis"], "connected", "{status}");
        assert_eq!(status["node_id"], node.name, "{status}");
        let nodes = status["nodes"].as_array().unwrap();
        let ids: Vec<&str> = nodes.iter().filter_map(|n| n["node_id"].as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "{status}");
        let leaders: Vec<&str> = nodes
            .iter()
            .filter(|n| n["role"] == "leader")
            .filter_map(|n| n["node_id"].as_str())
            .collect();
        assert_eq!(leaders, ["a"], "{status}");
    }

    // A group and its key created through A serve through B and C.
    let id = create_group(&a, &mock);
    assert_eq!(a.chat("shared", PROXY_KEY), 200);
    for node in [&b, &c] {
        let took = within(PROPAGATION, || node.chat("shared", PROXY_KEY) == 200);
        assert!(
            took.is_some(),
            "node {} serves the new group within {PROPAGATION:?}",
            node.name
        );
    }

    // A setting changed on C applies on A: a new global proxy key.
    let global = "sk-cluster-global-0123456789";
    assert_eq!(a.chat("shared", global), 401, "not a proxy key yet");
    let (status, body) = c.api("PUT", "/settings", Some(json!({"proxy_keys": global})));
    assert_eq!(status, 200, "{body}");
    for node in [&a, &b] {
        let took = within(PROPAGATION, || node.chat("shared", global) == 200);
        assert!(
            took.is_some(),
            "node {} takes the new setting within {PROPAGATION:?}",
            node.name
        );
    }

    // Keys deleted on B leave every pool: no node sends the key upstream any more.
    let (status, body) = b.api(
        "POST",
        "/keys/delete-multiple",
        Some(json!({"group_id": id, "keys_text": UPSTREAM_KEY})),
    );
    assert_eq!(status, 200, "{body}");
    for node in [&a, &c] {
        let took = within(PROPAGATION, || node.chat("shared", PROXY_KEY) == 503);
        assert!(
            took.is_some(),
            "node {} drops the deleted key within {PROPAGATION:?}",
            node.name
        );
    }
    let sent = mock.requests_by_key().get(UPSTREAM_KEY).copied().unwrap_or(0);
    assert!(sent >= 6, "every node sent the key while it existed: {sent}");
}

#[test]
fn changes_on_one_node_reach_the_others_on_postgres() {
    changes_on_one_node_reach_the_others(Server::Postgres, "cluster_changes_pg");
}

#[test]
fn changes_on_one_node_reach_the_others_on_mariadb() {
    changes_on_one_node_reach_the_others(Server::Mariadb, "cluster_changes_maria");
}

#[test]
fn a_dead_leader_is_replaced_within_the_lease_and_a_slave_never_leads() {
    let test = "cluster_failover";
    let Some((_db, shared, _runtime, _mock)) = setup(Server::Postgres, test) else {
        return;
    };
    let (mut a, b, mut c) = start_cluster(&shared, true);
    assert_eq!((b.role().as_str(), c.role().as_str()), ("follower", "follower"));

    // kill -9: no clean hand-over, the lease must run out.
    a.kill();
    let mut slave_led = false;
    let took = within(LEASE + Duration::from_secs(1), || {
        slave_led |= c.role() == "leader";
        b.role() == "leader"
    });
    assert!(
        took.is_some(),
        "b leads within the lease after a died:\n{}",
        b.log()
    );
    assert!(!slave_led, "the IS_SLAVE node never leads");
    let status = b.status();
    let ids: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert!(ids.contains(&"b") && ids.contains(&"c"), "{status}");

    // With every other node gone, the slave still follows.
    drop(b);
    let led = within(LEASE * 2, || c.role() == "leader");
    assert!(led.is_none(), "the IS_SLAVE node took the lease");
    assert_eq!(c.status()["redis"], "connected");
    c.kill();
}

/// Creates the group `shared` with the key [`UPSTREAM_KEY`] through `node`; its id.
fn create_group(node: &Node, mock: &MockUpstream) -> i64 {
    add_group(node, mock, "shared", json!({}), UPSTREAM_KEY)
}

/// Creates the OpenAI group `name` on `mock` with the group settings `config` and the one
/// upstream key `key` through `node`, with [`PROXY_KEY`]; its id.
fn add_group(node: &Node, mock: &MockUpstream, name: &str, config: Value, key: &str) -> i64 {
    let group = json!({"name": name, "channel_type": "openai", "test_model": "gpt-4o-mini",
                       "upstreams": [{"url": mock.url(), "weight": 1}], "proxy_keys": PROXY_KEY,
                       "config": config});
    let (status, body) = node.api("POST", "/groups", Some(group));
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["id"].as_i64().unwrap();
    let (status, body) = node.api(
        "POST",
        "/keys/add-multiple",
        Some(json!({"group_id": id, "keys_text": key})),
    );
    assert_eq!(status, 200, "{body}");
    id
}

#[test]
fn nodes_serve_through_a_redis_outage_and_resync_when_it_returns() {
    let Some((_db, mut redis, shared, _runtime, mock)) = setup_own_redis("cluster_redis_outage", false)
    else {
        return;
    };
    let (a, b, c) = start_cluster(&shared, false);
    create_group(&a, &mock);
    for node in [&b, &c] {
        assert!(
            within(PROPAGATION, || node.chat("shared", PROXY_KEY) == 200).is_some(),
            "node {} serves the new group",
            node.name
        );
    }

    redis.stop();
    // Every node keeps proxying from its own pool, and says Redis is gone.
    for node in [&a, &b, &c] {
        for _ in 0..5 {
            assert_eq!(
                node.chat("shared", PROXY_KEY),
                200,
                "node {} during the outage",
                node.name
            );
        }
        let status = node.status();
        assert_eq!(status["redis"], "disconnected", "{status}");
        assert_eq!(status["mode"], "cluster", "{status}");
    }
    // An admin write during the outage commits, and applies on the node that made it.
    let global = "sk-cluster-outage-0123456789";
    let (status, body) = a.api("PUT", "/settings", Some(json!({"proxy_keys": global})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.chat("shared", global), 200);

    // Redis comes back empty: every node reconnects and re-reads, within the reconcile interval.
    redis.start();
    for node in [&b, &c] {
        let took = within(RECONCILE + PROPAGATION, || node.chat("shared", global) == 200);
        assert!(
            took.is_some(),
            "node {} takes the change made during the outage:\n{}",
            node.name,
            node.log()
        );
    }
    // The cluster has one leader again and every node is back in the list.
    let led = within(LEASE + PROPAGATION, || {
        let status = b.status();
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        status["redis"] == "connected"
            && nodes.len() == 3
            && nodes.iter().filter(|n| n["role"] == "leader").count() == 1
    });
    assert!(
        led.is_some(),
        "one leader and three nodes after the outage: {}",
        b.status()
    );
}

#[test]
fn one_task_runs_across_the_cluster() {
    let Some((_db, shared, _runtime, mock)) = setup(Server::Postgres, "cluster_task") else {
        return;
    };
    let (a, b, _c) = start_cluster(&shared, false);
    let id = create_group(&a, &mock);
    // Keys the mock answers after 200 ms each: validating them takes seconds.
    let slow: Vec<String> = (0..200).map(|i| format!("mock-slow-{i:04}")).collect();
    let (status, body) = a.api(
        "POST",
        "/keys/add-multiple",
        Some(json!({"group_id": id, "keys_text": slow.join("\n")})),
    );
    assert_eq!(status, 200, "{body}");

    let (status, body) = a.api("POST", "/keys/validate-group", Some(json!({"group_id": id})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["is_running"], true, "{body}");
    // B sees A's task and cannot start another; neither can A.
    let (status, body) = b.api("GET", "/tasks/status", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["is_running"], true, "{body}");
    assert_eq!(body["data"]["task_type"], "KEY_VALIDATION", "{body}");
    assert_eq!(body["data"]["group_name"], "shared", "{body}");
    for node in [&b, &a] {
        let (status, body) = node.api("POST", "/keys/validate-group", Some(json!({"group_id": id})));
        assert_eq!(status, 409, "node {}: {body}", node.name);
        let (status, body) = node.api(
            "POST",
            "/keys/add-async",
            Some(json!({"group_id": id, "keys_text": "sk-cluster-more-0001"})),
        );
        assert_eq!(status, 409, "node {}: {body}", node.name);
    }

    // B follows the task to its end, and may start the next one.
    let finished = within(Duration::from_secs(60), || {
        let (_, body) = b.api("GET", "/tasks/status", None);
        body["data"]["is_running"] == false && body["data"]["result"]["total_keys"] == 201
    });
    assert!(
        finished.is_some(),
        "B sees the task end: {:?}",
        b.api("GET", "/tasks/status", None)
    );
    let (status, body) = b.api(
        "POST",
        "/keys/add-async",
        Some(json!({"group_id": id, "keys_text": "sk-cluster-more-0001"})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = a.api("GET", "/tasks/status", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["task_type"], "KEY_IMPORT", "A sees B's task: {body}");
}

/// The commands Redis runs while `burst` does its work, from `MONITOR`: one line each.
fn monitored(redis: &OwnRedis, burst: impl FnOnce()) -> Vec<String> {
    let address = redis.url().trim_start_matches("redis://").to_owned();
    let mut monitor = TcpStream::connect(&address).unwrap();
    monitor.write_all(b"MONITOR\r\n").unwrap();
    let mut ok = [0u8; 5];
    monitor.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    burst();
    // A marker, so that everything before it has been read once it arrives.
    let mut marker = TcpStream::connect(&address).unwrap();
    marker.write_all(b"ECHO end-of-burst\r\n").unwrap();
    monitor.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 65536];
    while !seen.contains("end-of-burst") {
        let n = monitor.read(&mut buffer).expect("MONITOR output");
        assert!(n > 0, "MONITOR closed");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    seen.lines()
        .filter(|l| l.starts_with('+') && !l.contains("end-of-burst"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn successful_requests_make_no_redis_call() {
    let Some((_db, redis, shared, _runtime, mock)) = setup_own_redis("cluster_no_redis_on_success", false)
    else {
        return;
    };
    let a = Node::start("a", &shared, &[]);
    create_group(&a, &mock);
    assert_eq!(a.chat("shared", PROXY_KEY), 200);

    const REQUESTS: usize = 400;
    let commands = monitored(&redis, || {
        for _ in 0..REQUESTS {
            assert_eq!(a.chat("shared", PROXY_KEY), 200);
        }
        // Long enough for one reconcile, which shows that the node's commands are seen.
        std::thread::sleep(RECONCILE * 2);
    });
    assert!(
        commands.iter().any(|line| line.contains("\"HGETALL\"")),
        "MONITOR saw the node's reconcile: {commands:#?}"
    );
    // What runs meanwhile is the cluster's own pace (lease, heartbeat, reconcile), which does not
    // grow with traffic: every command names one of those keys or none.
    let background = [
        format!("\"{}:leader", shared.prefix),
        format!("\"{}:node:", shared.prefix),
        format!("\"{}:versions\"", shared.prefix),
        format!("\"{}:invalidations\"", shared.prefix),
    ];
    let per_request: Vec<&String> = commands
        .iter()
        .filter(|line| {
            let names_prefix = line.contains(&format!("\"{}", shared.prefix));
            let known = background.iter().any(|key| line.contains(key.as_str()));
            let bare = ["\"PING\"", "\"CLIENT\"", "\"HELLO\""]
                .iter()
                .any(|c| line.contains(c));
            (names_prefix && !known) || (!names_prefix && !bare)
        })
        .collect();
    assert!(
        per_request.is_empty(),
        "commands beyond the cluster's own pace during {REQUESTS} requests: {per_request:#?}"
    );
    assert!(
        commands.len() < REQUESTS / 4,
        "{} Redis commands during {REQUESTS} requests: {commands:#?}",
        commands.len()
    );
    assert_eq!(
        mock.requests_by_key().get(UPSTREAM_KEY).copied(),
        Some(REQUESTS as u64 + 1)
    );
}

#[test]
fn a_key_failing_once_on_each_node_is_blacklisted_once_everywhere() {
    let Some((_db, shared, _runtime, mock)) = setup(Server::Postgres, "cluster_key_failures") else {
        return;
    };
    let (a, b, c) = start_cluster(&shared, false);
    // The mock answers this key 401: a failure counted against it. The threshold is 3.
    let failing = "mock-401-cluster-0001";
    let config = json!({"blacklist_threshold": 3});
    let id = add_group(&a, &mock, "failing", config, failing);
    for node in [&a, &b, &c] {
        assert!(
            within(PROPAGATION, || node.knows_group("failing", PROXY_KEY)).is_some(),
            "node {} serves the group",
            node.name
        );
    }

    // One failure on each node: none of them alone reaches the threshold.
    for node in [&a, &b, &c] {
        assert_ne!(node.chat("failing", PROXY_KEY), 200, "node {}", node.name);
    }
    assert_eq!(mock.requests_by_key().get(failing).copied(), Some(3));

    // The cluster's count reached 3 on the third: every node stops selecting the key.
    let invalid = ["group=\"failing\"", "state=\"invalid\""];
    for node in [&a, &b, &c] {
        let took = within(PROPAGATION, || {
            node.metric("gpt_load_key_state_transitions_total", &invalid) >= 1.0
        });
        assert!(
            took.is_some(),
            "node {} blacklists the key:\n{}",
            node.name,
            node.log()
        );
    }
    let blacklisted: f64 = [&a, &b, &c]
        .iter()
        .map(|node| node.metric("gpt_load_cluster_keys_blacklisted_total", &[]))
        .sum();
    assert_eq!(
        blacklisted, 1.0,
        "the key was blacklisted once across the cluster"
    );
    for node in [&a, &b, &c] {
        for _ in 0..3 {
            assert_eq!(node.chat("failing", PROXY_KEY), 503, "node {}", node.name);
        }
    }
    assert_eq!(
        mock.requests_by_key().get(failing).copied(),
        Some(3),
        "no node sent the blacklisted key upstream"
    );

    // Stored as invalid (each node writes its keys' states behind), then restored on C: it
    // serves again on A and B.
    let stored = within(Duration::from_secs(10), || {
        let (_, page) = c.api("GET", &format!("/keys?group_id={id}&status=invalid"), None);
        page["data"]["items"][0]["key_value"] == failing
    });
    assert!(stored.is_some(), "the key is stored as invalid");
    let (status, body) = c.api("POST", "/keys/restore-all-invalid", Some(json!({"group_id": id})));
    assert_eq!(status, 200, "{body}");
    for node in [&a, &b] {
        let took = within(PROPAGATION, || node.chat("failing", PROXY_KEY) != 503);
        assert!(took.is_some(), "node {} selects the restored key", node.name);
    }
}

#[test]
fn validation_runs_once_per_interval_across_a_failover() {
    let Some((_db, shared, _runtime, mock)) = setup(Server::Postgres, "cluster_validation") else {
        return;
    };
    let (mut a, b, c) = start_cluster(&shared, false);
    // A key the mock refuses, blacklisted by its first failure; the leader re-validates it every
    // minute (the shortest interval), and it stays invalid.
    let dead = "mock-401-validated-0001";
    let config = json!({"blacklist_threshold": 1, "key_validation_interval_minutes": 1});
    add_group(&a, &mock, "validated", config, dead);
    assert_ne!(a.chat("validated", PROXY_KEY), 200);
    let sent = || mock.requests_by_key().get(dead).copied().unwrap_or(0);
    assert_eq!(sent(), 1);

    // The leader's job looks every minute: the first run comes within two.
    let minute = Duration::from_secs(60);
    assert!(
        within(minute * 2 + PROPAGATION, || sent() == 2).is_some(),
        "the leader validates the key:\n{}",
        a.log()
    );
    let validated = Instant::now();

    // The leader dies right after its run; B or C takes over but does not validate again before
    // the interval has passed since A's run, then validates once.
    a.kill();
    let took_over = within(LEASE + PROPAGATION, || {
        b.role() == "leader" || c.role() == "leader"
    });
    assert!(took_over.is_some(), "a new leader:\n{}\n{}", b.log(), c.log());
    let leader = if b.role() == "leader" { &b } else { &c };
    let quiet = (minute - Duration::from_secs(5)).saturating_sub(validated.elapsed());
    let early = within(quiet, || sent() > 2);
    assert!(
        early.is_none(),
        "validated again within the interval, {:?} after the first run",
        validated.elapsed()
    );
    assert!(
        within(minute * 2 + PROPAGATION, || sent() == 3).is_some(),
        "the new leader validates once the interval has passed:\n{}",
        leader.log()
    );
    // The interval counts from when the first run was recorded, a moment after its request.
    let second = validated.elapsed();
    assert!(
        second >= minute - Duration::from_secs(1),
        "the second run came {second:?} after the first"
    );
    assert_eq!(sent(), 3, "validated once per interval");
}

#[test]
fn nodes_share_state_over_a_tls_redis_whose_certificate_they_check() {
    let Some((_db, redis, shared, _runtime, mock)) = setup_own_redis("cluster_tls", true) else {
        return;
    };
    assert!(shared.redis.starts_with("rediss://"));
    // The server's certificate is its own CA: a node that does not trust it does not connect.
    let stranger = Node::start("stranger", &shared, &[]);
    let status = stranger.status();
    assert_eq!(status["redis"], "disconnected", "{status}");
    assert_eq!(status["role"], "follower", "{status}");
    drop(stranger);

    let ca = redis.certificate();
    let trusted = [("REDIS_CA_CERT", ca.to_str().unwrap())];
    let a = Node::start("a", &shared, &trusted);
    assert!(
        within(START, || a.role() == "leader").is_some(),
        "a leads:\n{}",
        a.log()
    );
    let b = Node::start("b", &shared, &trusted);
    for node in [&a, &b] {
        let status = node.status();
        assert_eq!(status["redis"], "connected", "{status}");
        assert_eq!(status["nodes"].as_array().map(Vec::len), Some(2), "{status}");
    }
    create_group(&a, &mock);
    assert!(
        within(PROPAGATION, || b.chat("shared", PROXY_KEY) == 200).is_some(),
        "b serves the group created on a:\n{}",
        b.log()
    );
}

#[test]
fn a_policy_saved_on_one_node_decides_the_next_request_on_another() {
    let Some((_db, shared, _runtime, mock)) = setup(Server::Postgres, "cluster_policies") else {
        return;
    };
    let a = Node::start("a", &shared, &[]);
    assert!(within(START, || a.role() == "leader").is_some(), "{}", a.log());
    let b = Node::start("b", &shared, &[]);
    // The key's account is out of credit: a 400 the built-in rules count against the key, and
    // with no blacklist threshold never blacklist it.
    let spent = "sk-cluster-spent-0001";
    mock.script(spent, Behaviour::OutOfCredit);
    let group = add_group(&a, &mock, "credit", json!({"blacklist_threshold": 0}), spent);
    // B has the group and its key once the key's out-of-credit answer comes back.
    let took = within(PROPAGATION, || b.chat("credit", PROXY_KEY) == 400);
    assert!(took.is_some(), "node b serves the group:\n{}", b.log());
    for _ in 0..3 {
        assert_eq!(
            b.chat("credit", PROXY_KEY),
            400,
            "the upstream's answer, the key kept"
        );
    }

    let rules = json!({"rules": [{"name": "no credit", "conditions": [
        {"type": "status_code", "operator": "equals", "value": 400},
        {"type": "body", "operator": "regex", "value": "insufficient_quota"}], "action": "invalidate"}]});
    let (status, body) = a.api(
        "POST",
        "/policies",
        Some(json!({"name": "credit", "config": rules})),
    );
    assert_eq!(status, 200, "{body}");
    let policy = body["data"]["id"].as_i64().unwrap();
    let (status, body) = a.api(
        "PUT",
        &format!("/groups/{group}/policies"),
        Some(json!({"policies": [{"policy_id": policy}]})),
    );
    assert_eq!(status, 200, "{body}");

    // B's next request that reaches the key invalidates it; then no node has a key to send.
    let took = within(PROPAGATION, || b.chat("credit", PROXY_KEY) == 503);
    assert!(took.is_some(), "node b applies the policy:\n{}", b.log());
    let took = within(PROPAGATION, || a.chat("credit", PROXY_KEY) == 503);
    assert!(took.is_some(), "node a hears of the invalid key:\n{}", a.log());
}

#[test]
fn a_per_model_quota_met_on_one_node_rests_that_model_on_every_node() {
    let Some((_db, shared, _runtime, mock)) = setup(Server::Postgres, "cluster_model_rests") else {
        return;
    };
    let a = Node::start("a", &shared, &[]);
    assert!(within(START, || a.role() == "leader").is_some(), "{}", a.log());
    let b = Node::start("b", &shared, &[]);
    // Gemini's free tier: this key is out of its per-minute quota for one model only.
    let key = "sk-cluster-gemini-0001";
    let (limited, other) = ("gemini-2.5-pro", "gemini-2.5-flash");
    mock.script(
        key,
        Behaviour::ProviderLimit {
            per_day: false,
            reset: Duration::from_secs(300),
            model: Some(limited.to_owned()),
        },
    );
    let group = json!({"name": "gemini", "channel_type": "gemini", "test_model": other,
                       "upstreams": [{"url": mock.url(), "weight": 1}], "proxy_keys": PROXY_KEY});
    let (status, body) = a.api("POST", "/groups", Some(group));
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["id"].as_i64().unwrap();
    let (status, body) = a.api(
        "POST",
        "/keys/add-multiple",
        Some(json!({"group_id": id, "keys_text": key})),
    );
    assert_eq!(status, 200, "{body}");
    let generate = |node: &Node, model: &str| {
        let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
        let path = format!("/proxy/gemini/v1beta/models/{model}:generateContent?key={PROXY_KEY}");
        node.http("POST", &path, None, Some(&body))
            .map_or(0, |(status, _)| status)
    };
    let sent_for = |model: &str| mock.received().iter().filter(|r| r.path.contains(model)).count();
    let took = within(PROPAGATION, || generate(&b, other) == 200);
    assert!(took.is_some(), "node b serves the group:\n{}", b.log());

    // A meets the quota: the key rests for that model there, and B hears of it.
    assert_ne!(generate(&a, limited), 200);
    assert_eq!(sent_for(limited), 1);
    let heard = within(PROPAGATION, || {
        let (_, health) = b.api("GET", &format!("/groups/{id}/key-health"), None);
        health["data"]["model_cooling"][0]["model"] == limited
    });
    assert!(heard.is_some(), "node b rests the model:\n{}", b.log());

    // B sends no request for that model upstream, and keeps serving the other one.
    assert_ne!(generate(&b, limited), 200);
    assert_eq!(
        sent_for(limited),
        1,
        "node b did not spend the key on the resting model"
    );
    assert_eq!(generate(&b, other), 200);
}

/// `key_rpm` and `group_rpm` count the requests of every node: a key limited to 6 per minute
/// gets 6 in all from three nodes, a group limited to 4 takes 4, and every node refuses the rest
/// with the gateway's own 429 naming the limit.
#[test]
fn key_and_group_limits_hold_across_the_nodes() {
    let Some((_db, shared, _runtime, mock)) = setup(Server::Postgres, "cluster_limits") else {
        return;
    };
    let (a, b, c) = start_cluster(&shared, false);
    let key = "sk-cluster-rpm-0001";
    add_group(&a, &mock, "limited", json!({"key_rpm": 6}), key);
    let group_key = "sk-cluster-group-rpm-0001";
    add_group(&a, &mock, "capped", json!({"group_rpm": 4}), group_key);
    let path = |group: &str| format!("/proxy/{group}/v1/chat/completions");
    // Every node knows both groups before counting starts: a wrong proxy key is refused there
    // (401) before any limit counts it, where an unknown group is 404.
    for node in [&a, &b, &c] {
        for group in ["limited", "capped"] {
            let known = within(PROPAGATION * 5, || {
                matches!(
                    node.process
                        .http("POST", &path(group), Some("sk-wrong-proxy-key"), "{}"),
                    Ok((401, _))
                )
            });
            assert!(
                known.is_some(),
                "node {} knows {group}:\n{}",
                node.name,
                node.log()
            );
        }
    }
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let run = |group: &str, per_node: usize| {
        let (mut served, mut refused) = (0, Vec::new());
        for _ in 0..per_node {
            for node in [&a, &b, &c] {
                match node.http("POST", &path(group), Some(PROXY_KEY), Some(&chat)) {
                    Ok((200, _)) => served += 1,
                    Ok((429, body)) => refused.push(body),
                    other => panic!("node {}: {other:?}\n{}", node.name, node.log()),
                }
            }
        }
        (served, refused)
    };

    let (served, refused) = run("limited", 4);
    assert_eq!(
        served, 6,
        "six in the minute across the nodes; refused: {refused:?}"
    );
    assert_eq!(refused.len(), 6);
    for body in &refused {
        assert!(body.contains("rate limit 'key_rpm' reached"), "{body}");
    }
    assert_eq!(mock.requests_by_key().get(key), Some(&6));

    let (served, refused) = run("capped", 3);
    assert_eq!(
        served, 4,
        "four in the minute across the nodes; refused: {refused:?}"
    );
    assert_eq!(refused.len(), 5);
    for body in &refused {
        assert!(body.contains("rate limit 'group_rpm' reached"), "{body}");
    }
    assert_eq!(mock.requests_by_key().get(group_key), Some(&4));
}

#[test]
fn access_keys_made_on_one_node_work_and_stop_on_every_node() {
    let Some((_db, shared, _runtime, mock)) = setup(Server::Postgres, "cluster_access") else {
        return;
    };
    let (a, b, c) = start_cluster(&shared, false);
    add_group(&a, &mock, "team", json!({}), "sk-cluster-access-0001");
    let (status, made) = a.api(
        "POST",
        "/access-keys",
        Some(json!({"name": "search team", "allowed_models": ["gpt-4o*"]})),
    );
    assert_eq!(status, 200, "{made}");
    let key = made["data"]["key"].as_str().unwrap().to_owned();
    let id = made["data"]["access_key"]["id"].as_i64().unwrap();
    let path = "/proxy/team/v1/chat/completions";
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let status_on = |node: &Node, model: &str| match node.http("POST", path, Some(&key), Some(&chat(model))) {
        Ok((status, _)) => status,
        Err(err) => panic!("node {}: {err:?}\n{}", node.name, node.log()),
    };

    // Made on one node, it works on every node; its model patterns hold there too.
    for node in [&a, &b, &c] {
        let works = within(PROPAGATION * 5, || status_on(node, "gpt-4o-mini") == 200);
        assert!(
            works.is_some(),
            "node {} takes the access key:\n{}",
            node.name,
            node.log()
        );
        assert_eq!(status_on(node, "claude-3-5-haiku"), 403, "node {}", node.name);
    }

    // Switched off on one node, it stops on every node (a node serves it until the change
    // reaches it).
    let (status, body) = b.api(
        "PUT",
        &format!("/access-keys/{id}"),
        Some(json!({"enabled": false})),
    );
    assert_eq!(status, 200, "{body}");
    for node in [&a, &b, &c] {
        let stopped = within(PROPAGATION * 5, || status_on(node, "gpt-4o-mini") == 401);
        assert!(
            stopped.is_some(),
            "node {} refuses the disabled key:\n{}",
            node.name,
            node.log()
        );
    }
    let served = mock.total_requests();
    for node in [&a, &b, &c] {
        assert_eq!(status_on(node, "gpt-4o-mini"), 401, "node {}", node.name);
    }
    assert_eq!(mock.total_requests(), served, "no refusal reached the upstream");
}
