//! The built `gpt-load-gateway` binary as a child process of a test: on a free loopback port, in
//! a directory of its own (its data, its log and its bootstrap file), killed on drop.
//!
//! [`GatewayCommand`] says how to start it, [`GatewayProcess`] is the running gateway. The
//! blocking HTTP/1.1 client of [`GatewayProcess::http`] needs no runtime, so a test may call it
//! from plain threads and from inside `#[tokio::test]` alike.

use std::{
    ffi::{OsStr, OsString},
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{gateway_binary, servers::unique_name};

/// How long a gateway may take to start or to exit unless [`GatewayCommand::patience`] says
/// otherwise (a debug build on a loaded CI machine).
const DEFAULT_PATIENCE: Duration = Duration::from_secs(60);
/// How often a start or an exit is looked for.
const POLL: Duration = Duration::from_millis(50);
/// How long [`GatewayProcess::http`] waits for an answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports [`GatewayCommand::start`] tries when another process takes the chosen one.
const PORT_ATTEMPTS: usize = 3;

/// How to start the gateway. Every process gets a clean environment with `PATH`, `HOST`
/// (`127.0.0.1`), `PORT` (a free port), `AUTH_KEY` and `DATA_DIR` (`<dir>/data`), then the
/// variables given here; its working directory is an empty directory of its own, so no `.env`
/// is read, and its standard output and error go to `<dir>/gateway.log`.
#[derive(Clone, Debug)]
pub struct GatewayCommand {
    label: String,
    auth_key: String,
    envs: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    bootstrap: Option<String>,
    cpu: Option<String>,
    patience: Duration,
}

impl GatewayCommand {
    /// A gateway with the admin key `auth_key`. `label` (such as `one_cpu` or `cluster_a`) names
    /// its directory, kept apart from every other one by [`unique_name`], and its printed log.
    pub fn new(label: &str, auth_key: &str) -> Self {
        Self {
            label: label.to_owned(),
            auth_key: auth_key.to_owned(),
            envs: Vec::new(),
            args: Vec::new(),
            bootstrap: None,
            cpu: None,
            patience: DEFAULT_PATIENCE,
        }
    }

    /// Sets an environment variable on top of the defaults.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets environment variables on top of the defaults.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        &mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        for (key, value) in vars {
            self.env(key, value);
        }
        self
    }

    /// Adds a command-line argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// The bootstrap configuration (groups, settings): written to `<dir>/bootstrap.json` and
    /// named by `GPT_LOAD_BOOTSTRAP`.
    pub fn bootstrap(&mut self, config: &Value) -> &mut Self {
        self.bootstrap = Some(config.to_string());
        self
    }

    /// Runs the gateway on the one CPU `cpu` (`taskset -c`, from util-linux).
    pub fn cpu(&mut self, cpu: &str) -> &mut Self {
        self.cpu = Some(cpu.to_owned());
        self
    }

    /// How long the gateway may take to answer `/health` after its start, and to exit after
    /// [`GatewayProcess::terminate`] or in [`GatewayProcess::wait_exit`] (60 s by default).
    pub fn patience(&mut self, patience: Duration) -> &mut Self {
        self.patience = patience;
        self
    }

    /// Starts the gateway and waits until `GET /health` answers `200`.
    ///
    /// # Panics
    ///
    /// When the gateway cannot be started, exits before it is healthy (unless another process
    /// took its port: then it starts again on another), or is not healthy within the patience.
    /// Its log is printed as the process is dropped.
    pub fn start(&self) -> GatewayProcess {
        let mut attempt = 1;
        loop {
            let mut process = self.spawn();
            if process.wait_healthy() {
                return process;
            }
            // A free port can be taken between choosing and binding it: the gateway then exits
            // at once, naming the address, and another port is tried.
            let lost_port = process.log().contains(&format!("binding {}", process.addr()));
            assert!(
                lost_port && attempt < PORT_ATTEMPTS,
                "gateway {} exited before it was healthy",
                self.label
            );
            attempt += 1;
        }
    }

    /// Starts the gateway without waiting for it, as for a start that is meant to fail.
    ///
    /// # Panics
    ///
    /// When the directory, the log or the bootstrap file cannot be written, or the process
    /// cannot be started.
    pub fn spawn(&self) -> GatewayProcess {
        let dir = std::env::temp_dir().join(unique_name(&self.label));
        std::fs::create_dir_all(&dir).expect("a directory for the gateway");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let log = std::fs::File::create(dir.join("gateway.log")).expect("the gateway log");
        let mut command = match &self.cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.arg("-c").arg(cpu).arg(gateway_binary());
                taskset
            }
            None => Command::new(gateway_binary()),
        };
        command
            .args(&self.args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("AUTH_KEY", &self.auth_key)
            .env("DATA_DIR", dir.join("data"))
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the gateway log"))
            .stderr(log);
        if let Some(config) = &self.bootstrap {
            let path = dir.join("bootstrap.json");
            std::fs::write(&path, config).expect("the bootstrap file");
            command.env("GPT_LOAD_BOOTSTRAP", path);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("gateway {} does not start: {err}", self.label));
        GatewayProcess {
            label: self.label.clone(),
            base: format!("http://127.0.0.1:{port}"),
            patience: self.patience,
            child,
            dir,
        }
    }
}

/// A running gateway. Dropping it kills it, prints its log when the test is failing, and
/// removes its directory.
#[derive(Debug)]
pub struct GatewayProcess {
    label: String,
    base: String,
    patience: Duration,
    child: Child,
    dir: PathBuf,
}

impl GatewayProcess {
    /// `http://127.0.0.1:{port}`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `127.0.0.1:{port}`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the gateway has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// Kills the gateway (`SIGKILL`: no clean shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `SIGTERM` and waits for the exit.
    ///
    /// # Panics
    ///
    /// When the signal cannot be sent, or the gateway does not exit within the patience.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {}", self.pid());
        self.wait_exit()
    }

    /// Waits for the gateway to exit by itself.
    ///
    /// # Panics
    ///
    /// When it does not exit within the patience.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.poll("exit", |gateway| {
            gateway.child.try_wait().expect("the gateway's status")
        })
    }

    /// The process's peak resident set so far (`VmHWM`), in bytes. Linux only.
    ///
    /// # Panics
    ///
    /// When `/proc/<pid>/status` cannot be read or has no `VmHWM`.
    pub fn peak_rss(&self) -> usize {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/<pid>/status");
        let kib: usize = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    /// One HTTP/1.1 exchange on a fresh connection: the status and the body (de-chunked). A
    /// non-empty `body` is sent as JSON; `bearer` goes in `Authorization`.
    ///
    /// # Errors
    ///
    /// When the connection fails, or the answer does not arrive in time or is not HTTP.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> Result<(u16, String), String> {
        let addr = self.addr();
        let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(HTTP_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(token) = bearer {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").ok_or("no header end")?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no status")?;
        let chunked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
        Ok((status, if chunked { unchunk(body) } else { body.to_owned() }))
    }

    /// Polls `GET /health` until it answers `200` (true) or the process exits (false).
    fn wait_healthy(&mut self) -> bool {
        self.poll("become healthy", |gateway| {
            if !matches!(gateway.child.try_wait(), Ok(None)) {
                return Some(false);
            }
            matches!(gateway.http("GET", "/health", None, ""), Ok((200, _))).then_some(true)
        })
    }

    /// Calls `step` every [`POLL`] until it answers; panics when the patience runs out first,
    /// saying the gateway did not `what`.
    fn poll<T>(&mut self, what: &str, mut step: impl FnMut(&mut Self) -> Option<T>) -> T {
        let deadline = Instant::now() + self.patience;
        loop {
            if let Some(answer) = step(self) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "gateway {} did not {what} within {:?}",
                self.label,
                self.patience
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- gateway {} log\n{}", self.label, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The data of a `Transfer-Encoding: chunked` body.
fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
