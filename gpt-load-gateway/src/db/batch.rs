//! Multi-row inserts cut to sizes every backend accepts.

/// Most rows per multi-row insert (29 bind parameters a request-log row, our widest: 14,500 per
/// statement, under every server's limit of 65,535).
pub(crate) const INSERT_ROWS: usize = 500;
/// Most bytes per multi-row insert. Logged bodies reach 65 kB each; MariaDB refuses statements
/// over `max_allowed_packet` (16 MiB by default).
pub(crate) const INSERT_BYTES: usize = 4 << 20;

/// Roughly how many bytes a row adds to an `INSERT` statement.
pub(crate) trait ApproxSize {
    fn approx_size(&self) -> usize;
}

/// Implements [`ApproxSize`] for row types: a fixed part for the numbers and times, plus the
/// length of each named text field.
macro_rules! approx_size {
    ($($row:ty: $fixed:literal $(+ $text:ident)*;)+) => {
        $(impl $crate::db::batch::ApproxSize for $row {
            fn approx_size(&self) -> usize {
                $fixed $(+ self.$text.len())*
            }
        })+
    };
}
pub(crate) use approx_size;

/// Splits `rows` into consecutive chunks of at most [`INSERT_ROWS`] rows and, unless a single
/// row is larger, [`INSERT_BYTES`] bytes.
pub(crate) fn insert_chunks<T: ApproxSize>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut len = 0;
        for row in rest.iter().take(INSERT_ROWS) {
            bytes += row.approx_size();
            if len > 0 && bytes > INSERT_BYTES {
                break;
            }
            len += 1;
        }
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}
