//! A fresh database per test, cloned from a template migrated once per migration set.

use chrono::Utc;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// The URL of the Postgres and Redis that `just test` started.
pub fn base_env() -> (String, String) {
    let db = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is unset: run the tests with `just test`");
    let redis =
        std::env::var("REDIS_URL").expect("REDIS_URL is unset: run the tests with `just test`");
    (db, redis)
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, _) = url.rsplit_once('/').expect("a database URL has a path");
    let query = url
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{head}/{name}{query}")
}

pub(crate) async fn admin() -> tokio_postgres::Client {
    let (db, _) = base_env();
    let (client, conn) = tokio_postgres::connect(&with_database(&db, "postgres"), NoTls)
        .await
        .expect("connect to the test Postgres");
    tokio::spawn(conn);
    client
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A database migrated once per migration set, which every test clones.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut files: Vec<_> =
                std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
            files.sort();
            for f in files {
                for b in std::fs::read(f).unwrap() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
            }
            let name = format!("restock_template_{h:016x}");
            let admin = admin().await;
            admin
                .execute("SELECT pg_advisory_lock(7465737401)", &[])
                .await
                .unwrap();
            // Databases of earlier runs are dropped here, once per test process; only those
            // over an hour old (the name carries its creation time), so test processes running
            // side by side keep theirs.
            for row in admin
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'restock_test_%'",
                    &[],
                )
                .await
                .unwrap()
            {
                let db: String = row.get(0);
                let created = db
                    .strip_prefix("restock_test_")
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|ts| ts.parse::<i64>().ok())
                    .unwrap_or(0);
                if Utc::now().timestamp() - created < 3_600 {
                    continue;
                }
                let _ = admin
                    .execute(
                        &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
                        &[],
                    )
                    .await;
            }
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                admin
                    .execute(
                        &format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
                        &[],
                    )
                    .await
                    .unwrap();
                admin
                    .execute(&format!("CREATE DATABASE \"{building}\""), &[])
                    .await
                    .unwrap();
                let (db, _) = base_env();
                restock_store::migrate::run(&with_database(&db, &building))
                    .await
                    .expect("migrate the template");
                admin
                    .execute(
                        &format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\""),
                        &[],
                    )
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(7465737401)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

/// A fresh, migrated database; answers its URL.
pub async fn fresh_database() -> String {
    let template = template().await;
    let name = format!(
        "restock_test_{}_{}",
        chrono::Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    );
    admin()
        .await
        .execute(
            &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
            &[],
        )
        .await
        .expect("clone the template database");
    let (db, _) = base_env();
    with_database(&db, &name)
}
