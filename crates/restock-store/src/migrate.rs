//! Schema migrations: the plain SQL files of `migrations/`, embedded in the binary and applied
//! in order, tracked in refinery's table.

use tokio_postgres::NoTls;

use crate::StoreError;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Key of the advisory lock that makes replicas starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7265_7374_6f63_6b01;

/// Applies every pending migration; answers the versions applied by this call.
pub async fn run(url: &str) -> Result<Vec<String>, StoreError> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let conn = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await
        .map_err(|e| StoreError::Migration(e.to_string()));
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    drop(client);
    let _ = conn.await;
    Ok(report?
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}
