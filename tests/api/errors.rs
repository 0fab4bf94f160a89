//! How Postgres's failures reach callers: a database going away is UNAVAILABLE (retry), never
//! an opaque INTERNAL; an INTERNAL's log line carries Postgres's own words.

use restock_store::StoreError;

use crate::helpers::*;

async fn session(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn postgres_shutting_a_session_down_mid_statement_is_unavailable() {
    let db_url = fresh_database().await;
    let victim = session(&db_url).await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let killer = session(&db_url).await;
    let slow = tokio::spawn(async move { victim.query("SELECT pg_sleep(10)", &[]).await });
    // Terminate once the statement is running (SQLSTATE 57P01, admin_shutdown).
    eventually(std::time::Duration::from_secs(5), "sleeping", || async {
        killer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%' AND state = 'active'",
                &[&pid],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    killer
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let e = slow.await.unwrap().expect_err("terminated");
    let mapped = StoreError::from(e);
    assert!(matches!(mapped, StoreError::Unavailable(_)), "{mapped:?}");
    assert!(mapped.to_string().contains("57P01"), "{mapped}");
}

#[tokio::test]
async fn a_statement_postgres_refuses_is_described_in_its_own_words() {
    let db_url = fresh_database().await;
    let client = session(&db_url).await;
    let e = client
        .query("SELECT 1 / 0", &[])
        .await
        .expect_err("division by zero");
    let mapped = StoreError::from(e);
    assert!(matches!(mapped, StoreError::Db(_)), "{mapped:?}");
    let said = mapped.to_string();
    assert!(
        said.contains("division by zero") && said.contains("22012"),
        "{said}"
    );
}
