//! Load client of the loopback benchmark (`make bench`, see `bench/README.md`).
//!
//! Two measurements that oha and wrk cannot make, each printing one JSON object on stdout:
//!
//! - `ttff`: time from sending a streaming request to receiving its first `data:` frame, one
//!   request at a time on one keep-alive HTTP/1.1 connection (as an SDK would);
//! - `streams`: many concurrent streaming requests, each on its own connection, opened at a
//!   bounded rate; reports how many were open at the same time and how many `data:` frames
//!   arrived against the number expected.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Load client of the loopback benchmark.
#[derive(Debug, Parser)]
#[command(name = "bench-client", version, about)]
enum Command {
    /// Time to the first `data:` frame of sequential streaming requests on one connection.
    Ttff(TtffArgs),
    /// Concurrent streaming requests, one connection each; counts frames.
    Streams(StreamsArgs),
}

/// What to send.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// Full URL, `http://127.0.0.1:PORT/path` (plain HTTP/1.1 only).
    #[arg(long)]
    url: Uri,
    /// Extra request header `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Request body (sent as `application/json`).
    #[arg(long)]
    body: String,
}

#[derive(Debug, clap::Args)]
struct TtffArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Measured requests.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Requests sent first and not measured.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
}

#[derive(Debug, clap::Args)]
struct StreamsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Concurrent streams to open.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// `data:` frames each complete stream carries.
    #[arg(long)]
    expect_frames: u64,
    /// Streams being opened at once (connect, send, wait for the response head).
    #[arg(long, default_value_t = 128)]
    open_concurrency: usize,
    /// Give up on streams still open after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let report = match Command::parse() {
        Command::Ttff(args) => ttff(args).await?,
        Command::Streams(args) => streams(args).await?,
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    out.flush()
}

/// The parsed target: where to connect and the request to repeat.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    path: Uri,
    authority: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Target {
    fn parse(args: TargetArgs) -> std::io::Result<Self> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        if args.url.scheme_str() != Some("http") {
            return Err(invalid(format!("{}: only http:// URLs are supported", args.url)));
        }
        let authority = args
            .url
            .authority()
            .ok_or_else(|| invalid(format!("{}: no host", args.url)))?;
        let addr: SocketAddr = authority
            .as_str()
            .parse()
            .map_err(|_| invalid(format!("{authority}: expected IP:PORT")))?;
        let path = args
            .url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| invalid(format!("{}: {e}", args.url)))?;
        let mut headers = Vec::with_capacity(args.headers.len());
        for line in &args.headers {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("header {line:?}: expected `Name: value`")))?;
            let name =
                HeaderName::try_from(name.trim()).map_err(|e| invalid(format!("header {name:?}: {e}")))?;
            let value =
                HeaderValue::try_from(value.trim()).map_err(|e| invalid(format!("header {name}: {e}")))?;
            headers.push((name, value));
        }
        Ok(Self {
            addr,
            path,
            authority: HeaderValue::try_from(authority.as_str()).map_err(|e| invalid(e.to_string()))?,
            headers,
            body: Bytes::from(args.body),
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.authority.clone());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    async fn connect(&self) -> std::io::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes; errors show up on requests.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// Counts `data:` occurrences across body frames (a match may straddle two frames).
#[derive(Debug, Default)]
struct DataFrames {
    matched: usize,
    count: u64,
}

impl DataFrames {
    const NEEDLE: &'static [u8] = b"data:";

    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == Self::NEEDLE[self.matched] {
                self.matched += 1;
                if self.matched == Self::NEEDLE.len() {
                    self.count += 1;
                    self.matched = 0;
                }
            } else {
                // No proper prefix of the needle is also a suffix of it, so restarting is exact.
                self.matched = usize::from(byte == Self::NEEDLE[0]);
            }
        }
    }
}

/// Reads a response body to its end, counting `data:` frames; returns the count and when the
/// first one arrived.
async fn read_frames(mut body: Incoming) -> (DataFrames, Option<Instant>, Option<String>) {
    let mut frames = DataFrames::default();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    frames.feed(data);
                    if first.is_none() && frames.count > 0 {
                        first = Some(Instant::now());
                    }
                }
            }
            Err(error) => return (frames, first, Some(format!("body: {error}"))),
        }
    }
    (frames, first, None)
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    json!({
        "p50": percentile(&samples, 50.0),
        "p90": percentile(&samples, 90.0),
        "p99": percentile(&samples, 99.0),
        "max": samples.last().copied().unwrap_or(f64::NAN),
        "mean": mean,
    })
}

async fn ttff(args: TtffArgs) -> std::io::Result<Value> {
    let target = Target::parse(args.target)?;
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut first_frame = Vec::with_capacity(args.requests);
    let mut total = Vec::with_capacity(args.requests);
    let mut frames_per_response = 0;
    let mut errors = 0_u64;
    let mut last_error = None;
    for index in 0..args.warmup + args.requests {
        let mut current = match sender.take() {
            Some(current) if !current.is_closed() => current,
            _ => target.connect().await?,
        };
        if current.ready().await.is_err() {
            current = target.connect().await?;
        }
        let request = target.request();
        let start = Instant::now();
        let outcome = match current.send_request(request).await {
            Ok(response) if response.status() == StatusCode::OK => {
                let (frames, first, error) = read_frames(response.into_body()).await;
                match (first, error) {
                    (Some(first), None) => Ok((first - start, start.elapsed(), frames.count)),
                    (_, Some(error)) => Err(error),
                    (None, None) => Err("no data: frame in the response".to_owned()),
                }
            }
            Ok(response) => Err(format!("status {}", response.status())),
            Err(error) => Err(format!("request: {error}")),
        };
        match outcome {
            Ok((first, whole, frames)) => {
                if index >= args.warmup {
                    first_frame.push(micros(first));
                    total.push(micros(whole));
                    frames_per_response = frames;
                }
            }
            Err(error) => {
                errors += 1;
                last_error = Some(error);
            }
        }
        sender = Some(current);
    }
    Ok(json!({
        "requests": first_frame.len(),
        "errors": errors,
        "last_error": last_error,
        "frames_per_response": frames_per_response,
        "first_frame_us": summary(first_frame),
        "total_us": summary(total),
    }))
}

/// Counters shared by every stream task.
#[derive(Debug, Default)]
struct Tally {
    open: AtomicU64,
    peak_open: AtomicU64,
    complete: AtomicU64,
    failed: AtomicU64,
    frames: AtomicU64,
    /// Microseconds since the start at which the last stream got its response head.
    last_head_us: AtomicU64,
    /// Microseconds since the start at which the first stream ended.
    first_end_us: AtomicU64,
}

async fn streams(args: StreamsArgs) -> std::io::Result<Value> {
    let target = Arc::new(Target::parse(args.target)?);
    let tally = Arc::new(Tally {
        first_end_us: AtomicU64::new(u64::MAX),
        ..Tally::default()
    });
    let opening = Arc::new(Semaphore::new(args.open_concurrency.max(1)));
    let errors = Arc::new(std::sync::Mutex::new(
        std::collections::BTreeMap::<String, u64>::new(),
    ));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.streams {
        let (target, tally, opening, errors) = (
            Arc::clone(&target),
            Arc::clone(&tally),
            Arc::clone(&opening),
            Arc::clone(&errors),
        );
        let expect = args.expect_frames;
        tasks.spawn(async move {
            let result = one_stream(&target, &tally, &opening, start, expect).await;
            if let Err(error) = result {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                let mut errors = errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *errors.entry(error).or_default() += 1;
            }
        });
    }
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_secs));
    tokio::pin!(deadline);
    let mut timed_out = 0_u64;
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = &mut deadline => {
                timed_out = tasks.len() as u64;
                tasks.abort_all();
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let frames = tally.frames.load(Ordering::Relaxed);
    let expected = args.expect_frames * args.streams as u64;
    let first_end = tally.first_end_us.load(Ordering::Relaxed);
    let errors = errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(json!({
        "streams": args.streams,
        "complete": tally.complete.load(Ordering::Relaxed),
        "failed": tally.failed.load(Ordering::Relaxed) + timed_out,
        "timed_out": timed_out,
        "peak_open": tally.peak_open.load(Ordering::Relaxed),
        "frames_expected": expected,
        "frames_received": frames,
        "frames_lost": expected.saturating_sub(frames),
        "last_head_ms": tally.last_head_us.load(Ordering::Relaxed) as f64 / 1e3,
        "first_end_ms": if first_end == u64::MAX { Value::Null } else { json!(first_end as f64 / 1e3) },
        "elapsed_ms": micros(elapsed) / 1e3,
        "errors": errors,
    }))
}

async fn one_stream(
    target: &Target,
    tally: &Tally,
    opening: &Semaphore,
    start: Instant,
    expect: u64,
) -> Result<(), String> {
    let permit = opening.acquire().await.map_err(|e| e.to_string())?;
    let mut sender = target
        .connect()
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let response = sender
        .send_request(target.request())
        .await
        .map_err(|e| format!("request: {e}"))?;
    drop(permit);
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let now_open = tally.open.fetch_add(1, Ordering::Relaxed) + 1;
    tally.peak_open.fetch_max(now_open, Ordering::Relaxed);
    tally
        .last_head_us
        .fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    let (frames, _, error) = read_frames(response.into_body()).await;
    tally.open.fetch_sub(1, Ordering::Relaxed);
    tally
        .first_end_us
        .fetch_min(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    tally.frames.fetch_add(frames.count, Ordering::Relaxed);
    if let Some(error) = error {
        return Err(error);
    }
    if frames.count != expect {
        return Err(format!("{} data: frames, expected {expect}", frames.count));
    }
    tally.complete.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_frames_across_chunk_boundaries() {
        let mut frames = DataFrames::default();
        for chunk in [&b"data: {}\n\nda"[..], b"ta: x\n\nddata", b":", b" [DONE]\n\n"] {
            frames.feed(chunk);
        }
        assert_eq!(frames.count, 3);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&samples, 50.0) - 50.0).abs() < f64::EPSILON);
        assert!((percentile(&samples, 99.0) - 99.0).abs() < f64::EPSILON);
        assert!((percentile(&samples, 100.0) - 100.0).abs() < f64::EPSILON);
    }
}
