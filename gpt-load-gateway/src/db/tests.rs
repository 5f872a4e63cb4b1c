//! SQLite's write paths under concurrency. A transaction that reads before it writes and began
//! `DEFERRED` fails at once (`SQLITE_BUSY_SNAPSHOT`, which the busy timeout does not wait out)
//! when another connection commits between its read and its write; the key write-behind and the
//! log writer commit at any moment, so every write path must begin `IMMEDIATE`.

use std::{sync::mpsc, time::Duration};

use diesel::{ExpressionMethods, QueryDsl};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{DbError, schema::system_settings, sqlite_batch, test_support::TestDb};
use crate::repo::settings;

/// How long the first transaction gives the other connection to commit between its read and its
/// write. Under `IMMEDIATE` the other connection waits for the first to finish, so this always
/// runs out; under `DEFERRED` the other commits within it and the first write then failed.
const WINDOW: Duration = Duration::from_millis(300);

async fn seeded() -> TestDb {
    let test = TestDb::sqlite().await;
    settings::update(&test.db, &[("seed", "1")]).await.unwrap();
    test
}

async fn descriptions(test: &TestDb) -> Vec<(String, String)> {
    use diesel_async::RunQueryDsl;
    let loaded: Result<_, DbError> = async {
        with_conn!(&test.db, |conn| {
            Ok(system_settings::table
                .order(system_settings::setting_key)
                .select((system_settings::setting_key, system_settings::description))
                .load(conn)
                .await?)
        })
    }
    .await;
    loaded.unwrap()
}

/// The other connection: once the first has read, it inserts a setting, then says so.
fn other_writer(
    test: &TestDb,
    read_done: oneshot::Receiver<()>,
    committed: impl FnOnce() + Send + 'static,
) -> JoinHandle<Result<(), DbError>> {
    let db = test.db.clone();
    tokio::spawn(async move {
        read_done.await.unwrap();
        let written = settings::update(&db, &[("other", "1")]).await;
        committed();
        written
    })
}

/// Both writes committed, the first one's before the other's insert (it updated the seed row
/// alone).
async fn assert_first_then_other(
    test: &TestDb,
    first: Result<usize, DbError>,
    other: JoinHandle<Result<(), DbError>>,
) {
    assert_eq!(first.unwrap(), 1, "the first write commits");
    other
        .await
        .unwrap()
        .expect("the other connection's write commits after it");
    assert_eq!(
        descriptions(test).await,
        [
            ("other".to_owned(), String::new()),
            ("seed".to_owned(), "first".to_owned())
        ],
        "the first write came before the other's insert"
    );
}

#[tokio::test]
async fn write_transaction_that_reads_first_survives_a_commit_in_between() {
    use diesel_async::RunQueryDsl;
    let test = seeded().await;
    let (read, read_done) = oneshot::channel::<()>();
    let (committed, mut other_committed) = oneshot::channel();
    let other = other_writer(&test, read_done, move || {
        let _ = committed.send(());
    });

    let first: Result<usize, DbError> = async {
        write_transaction!(&test.db, |conn| {
            let seen: i64 = system_settings::table.count().get_result(conn).await?;
            assert_eq!(seen, 1);
            read.send(()).unwrap();
            let _ = tokio::time::timeout(WINDOW, &mut other_committed).await;
            Ok(diesel::update(system_settings::table)
                .set(system_settings::description.eq("first"))
                .execute(conn)
                .await?)
        })
    }
    .await;

    assert_first_then_other(&test, first, other).await;
}

#[tokio::test]
async fn sqlite_batch_that_reads_first_survives_a_commit_in_between() {
    let test = seeded().await;
    let (read, read_done) = oneshot::channel::<()>();
    let (committed, other_committed) = mpsc::channel();
    let other = other_writer(&test, read_done, move || {
        let _ = committed.send(());
    });

    let first: Result<usize, DbError> = async {
        with_conn!(
            &test.db,
            sqlite | conn | {
                sqlite_batch(conn, move |conn| {
                    use diesel::RunQueryDsl;
                    let seen: i64 = system_settings::table.count().get_result(conn)?;
                    assert_eq!(seen, 1);
                    read.send(()).unwrap();
                    let _ = other_committed.recv_timeout(WINDOW);
                    diesel::update(system_settings::table)
                        .set(system_settings::description.eq("first"))
                        .execute(conn)
                })
                .await
            },
            server | _conn | unreachable!("a SQLite test database")
        )
    }
    .await;

    assert_first_then_other(&test, first, other).await;
}
