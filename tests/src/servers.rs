//! The project machines' database servers and Redis, for tests that run gateway processes:
//! a fresh PostgreSQL or MariaDB database per test (created and dropped with the servers'
//! command-line clients, so the test needs no driver), and the shared Redis.
//!
//! Servers come from `TEST_PG_URL`, `TEST_MYSQL_URL` and `TEST_REDIS_URL` (defaults: the project
//! machines' `postgres://postgres@127.0.0.1:5432/test`, `mysql://root@127.0.0.1:3306/test`,
//! `redis://127.0.0.1:6379`). One that is unreachable fails the test under `CI=true` and
//! otherwise skips it with one `SKIP` line.
//!
//! A test that stops and restarts Redis runs its own [`OwnRedis`] (`/usr/bin/redis-server`, or
//! `TEST_REDIS_SERVER`) on a free port and never touches the shared one.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A database server the gateway supports besides SQLite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Postgres,
    Mariadb,
}

/// Where a database server is and who logs in, from `TEST_PG_URL` / `TEST_MYSQL_URL`.
#[derive(Clone, Debug)]
pub struct ServerAddress {
    pub server: Server,
    pub host: String,
    pub port: String,
    pub user: String,
    pub password: String,
    /// The database the URL names: where tests' databases are created and dropped from.
    pub database: String,
}

impl ServerAddress {
    /// The server's variable, or the project machines' default.
    pub fn from_env(server: Server) -> Self {
        let url = std::env::var(server.variable()).unwrap_or_else(|_| server.default_url().to_owned());
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let rest = rest.split_once('?').map_or(rest, |(rest, _)| rest);
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, address) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        let (host, port) = address
            .rsplit_once(':')
            .unwrap_or((address, server.default_port()));
        Self {
            server,
            host: host.to_owned(),
            port: port.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            database: database.to_owned(),
        }
    }

    /// What to set or install when the server cannot be reached, for a `SKIP` line.
    pub fn requirement(&self) -> String {
        let client = match self.server {
            Server::Postgres => "psql (Debian package postgresql-client)",
            Server::Mariadb => "mysql (Debian package mariadb-client)",
        };
        format!("{} or {client}", self.server.variable())
    }

    /// The server's command-line client on `database`, printing rows as `a|b` lines; the caller
    /// adds the SQL (`-c`/`-e`, or standard input).
    pub fn client(&self, database: &str) -> Command {
        match self.server {
            Server::Postgres => {
                let mut command = Command::new("psql");
                command
                    .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                    .args([
                        "-h", &self.host, "-p", &self.port, "-U", &self.user, "-d", database,
                    ])
                    .env("PGPASSWORD", &self.password)
                    .env("PGCONNECT_TIMEOUT", "10");
                command
            }
            Server::Mariadb => {
                let mut command = Command::new("mysql");
                command
                    .args(["--protocol=TCP", "--connect-timeout=10", "-N", "-B"])
                    .args(["-h", &self.host, "-P", &self.port, "-u", &self.user, database])
                    .env("MYSQL_PWD", &self.password);
                command
            }
        }
    }

    /// Runs `sql` on `database`; its rows, one per line, columns separated by `|`.
    ///
    /// # Errors
    ///
    /// When the client cannot run or the statement fails.
    pub fn query(&self, database: &str, sql: &str) -> Result<String, String> {
        let flag = match self.server {
            Server::Postgres => "-c",
            Server::Mariadb => "-e",
        };
        let output = run(self.client(database).args([flag, sql]).stdin(Stdio::null()))?;
        Ok(output.replace('\t', "|").trim_end().to_owned())
    }
}

impl Server {
    fn variable(self) -> &'static str {
        match self {
            Self::Postgres => "TEST_PG_URL",
            Self::Mariadb => "TEST_MYSQL_URL",
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            Self::Postgres => "postgres://postgres@127.0.0.1:5432/test",
            Self::Mariadb => "mysql://root@127.0.0.1:3306/test",
        }
    }

    fn default_port(self) -> &'static str {
        match self {
            Self::Postgres => "5432",
            Self::Mariadb => "3306",
        }
    }
}

/// A database of one test on a server, dropped on drop.
#[derive(Debug)]
pub struct ServerDatabase {
    address: ServerAddress,
    name: String,
}

impl ServerDatabase {
    /// Creates an empty database for `test`; `None` (after a `SKIP` line) when the server or its
    /// client is not here and `CI` is not `true`.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when the server is unreachable, and when `CREATE DATABASE` fails.
    pub fn create(server: Server, test: &str) -> Option<Self> {
        let address = ServerAddress::from_env(server);
        if let Err(err) = address.query(&address.database, "SELECT 1") {
            return unavailable(test, &address.requirement(), &err);
        }
        let name = unique_name(test);
        address
            .query(&address.database, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|err| panic!("creating the test database: {err}"));
        Some(Self { address, name })
    }

    /// The `DATABASE_DSN` of this database.
    pub fn dsn(&self) -> String {
        let a = &self.address;
        let scheme = match a.server {
            Server::Postgres => "postgres",
            Server::Mariadb => "mysql",
        };
        let credentials = if a.password.is_empty() {
            a.user.clone()
        } else {
            format!("{}:{}", a.user, a.password)
        };
        format!("{scheme}://{credentials}@{}:{}/{}", a.host, a.port, self.name)
    }

    /// Runs `sql` on this database (see [`ServerAddress::query`]).
    ///
    /// # Errors
    ///
    /// When the client cannot run or the statement fails.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        self.address.query(&self.name, sql)
    }
}

impl Drop for ServerDatabase {
    fn drop(&mut self) {
        let sql = match self.address.server {
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Server::Mariadb => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        if let Err(err) = self.address.query(&self.address.database, &sql) {
            eprintln!("dropping the test database {}: {err}", self.name);
        }
    }
}

/// Runs a command to its end; its standard output, or why it failed.
///
/// # Errors
///
/// When the command cannot start or exits unsuccessfully (with its standard error).
pub fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|err| format!("{:?}: {err}", command.get_program()))?;
    if !output.status.success() {
        return Err(format!(
            "{:?} exited with {}: {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The shared Redis for `test`: its URL, or `None` (after a `SKIP` line) when it does not
/// answer and `CI` is not `true`. Tests isolate themselves with a key prefix of their own.
///
/// # Panics
///
/// Under `CI=true` when Redis does not answer.
pub fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, address)| address);
    let address = rest.split('/').next().unwrap_or(rest);
    let address = if address.contains(':') {
        address.to_owned()
    } else {
        format!("{address}:6379")
    };
    match ping(&address) {
        Ok(()) => Some(url),
        Err(err) => unavailable(test, "TEST_REDIS_URL (a running redis-server)", &err),
    }
}

/// `PING` over a plain socket.
fn ping(address: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{address} does not resolve"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
    if &answer == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&answer)
        ))
    }
}

/// A name of this test alone, for a database or a Redis key prefix.
pub fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "gptload_e2e_{test}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A server or program that is not here: a failure under `CI=true`, otherwise a `SKIP` line.
///
/// # Panics
///
/// Under `CI=true`.
pub fn unavailable<T>(test: &str, what: &str, err: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: a server is not available ({err}); start it or set {what}");
    }
    eprintln!("SKIP {test}: needs {what} ({err})");
    None
}

/// A `redis-server` of one test on a free port, in a directory of its own, keeping nothing on
/// disk; killed on drop. [`stop`](Self::stop) and [`start`](Self::start) take it down and bring
/// it back, empty, on the same port. [`OwnRedis::start_tls`] starts one that speaks TLS only,
/// with certificates made by `openssl`.
#[derive(Debug)]
pub struct OwnRedis {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    tls: bool,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one for `test`; `None` (after a `SKIP` line) when there is no `redis-server` and
    /// `CI` is not `true`.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when there is no `redis-server`, and when it does not answer.
    pub fn start_new(test: &str) -> Option<Self> {
        Self::create(test, false)
    }

    /// As [`OwnRedis::start_new`], serving TLS only (`rediss://`), with a certificate for
    /// `127.0.0.1` signed by a CA of its own ([`OwnRedis::certificate`]).
    ///
    /// # Panics
    ///
    /// As [`OwnRedis::start_new`], and when `openssl` cannot make the certificate.
    pub fn start_tls(test: &str) -> Option<Self> {
        Self::create(test, true)
    }

    fn create(test: &str, tls: bool) -> Option<Self> {
        let binary = PathBuf::from(
            std::env::var("TEST_REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".to_owned()),
        );
        if !binary.exists() {
            return unavailable(
                test,
                "TEST_REDIS_SERVER",
                &format!("{} is missing", binary.display()),
            );
        }
        let dir = std::env::temp_dir().join(unique_name(test));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if tls {
            // A CA of the test and a server certificate for 127.0.0.1 signed by it.
            std::fs::write(
                dir.join("server.ext"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .expect("the certificate's extensions");
            let steps: [&[&str]; 3] = [
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=gpt-load test CA",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                ],
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-keyout",
                    "key.pem",
                    "-out",
                    "server.csr",
                ],
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-extfile",
                    "server.ext",
                    "-out",
                    "cert.pem",
                ],
            ];
            for args in steps {
                let made = Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if !made.is_ok_and(|status| status.success()) {
                    return unavailable(test, "openssl on PATH", "openssl could not make the certificates");
                }
            }
        }
        let mut redis = Self {
            binary,
            dir,
            port,
            tls,
            child: None,
        };
        redis.start();
        Some(redis)
    }

    /// `redis://127.0.0.1:{port}`, or with TLS `rediss://127.0.0.1:{port}` (a client checks the
    /// certificate against [`OwnRedis::certificate`]).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificate (PEM) of the CA that signed a TLS server's certificate.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Starts the server (empty) and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When it is already running, or does not answer within 10 s.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let mut command = Command::new(&self.binary);
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("cert.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("key.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let answers = |address: &str| {
            if self.tls {
                // No TLS client here: a listening port is as far as this check goes.
                std::net::TcpStream::connect(address)
                    .map(drop)
                    .map_err(|e| e.to_string())
            } else {
                ping(address)
            }
        };
        while let Err(err) = answers(&address) {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on {address} does not answer: {err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (`SIGKILL`: no clean shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
