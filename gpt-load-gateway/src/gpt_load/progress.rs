//! Telling the operator how far a copy is: a bar on a terminal, log lines otherwise.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use super::copy::Progress;

/// How often progress is logged when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Progress as log lines (at start, under a supervisor): one per table and every few seconds.
#[derive(Debug)]
pub(crate) struct Logged {
    table: &'static str,
    total: u64,
    done: u64,
    last: Instant,
}

impl Default for Logged {
    fn default() -> Self {
        Self {
            table: "",
            total: 0,
            done: 0,
            last: Instant::now(),
        }
    }
}

impl Progress for Logged {
    fn start(&mut self, table: &'static str, total: u64) {
        *self = Self {
            table,
            total,
            done: 0,
            last: Instant::now(),
        };
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= LOG_EVERY {
            self.last = Instant::now();
            tracing::info!(
                table = self.table,
                done = self.done,
                total = self.total,
                "copying"
            );
        }
    }

    fn finish(&mut self) {
        tracing::info!(table = self.table, rows = self.done, "copied");
    }
}

/// A progress bar on standard error when it is a terminal, [`Logged`] lines otherwise.
#[derive(Debug, Default)]
pub(crate) struct Bar {
    logged: Logged,
    table: &'static str,
    total: u64,
    done: u64,
    drawn: Option<Instant>,
}

impl Bar {
    fn draw(&mut self, force: bool) {
        if self
            .drawn
            .is_some_and(|at| at.elapsed() < Duration::from_millis(100))
            && !force
        {
            return;
        }
        self.drawn = Some(Instant::now());
        const WIDTH: u64 = 30;
        let filled = (self.done.min(self.total) * WIDTH)
            .checked_div(self.total)
            .unwrap_or(WIDTH);
        let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '.' }).collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{:<20} [{bar}] {}/{}", self.table, self.done, self.total);
        let _ = err.flush();
    }
}

impl Progress for Bar {
    fn start(&mut self, table: &'static str, total: u64) {
        if !std::io::stderr().is_terminal() {
            return self.logged.start(table, total);
        }
        self.table = table;
        self.total = total;
        self.done = 0;
        self.draw(true);
    }

    fn advance(&mut self, n: u64) {
        if !std::io::stderr().is_terminal() {
            return self.logged.advance(n);
        }
        self.done += n;
        self.draw(false);
    }

    fn finish(&mut self) {
        if !std::io::stderr().is_terminal() {
            return self.logged.finish();
        }
        self.draw(true);
        let _ = writeln!(std::io::stderr());
    }
}
