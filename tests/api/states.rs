//! The stored states (restock_domain::states, SubscriptionStatus) against the schema: each
//! table's CHECK constraint admits exactly the enum's names, and every value goes through
//! Postgres and back by the enums' own ToSql/FromSql.

use std::collections::BTreeSet;

use restock_domain::{
    ConfirmationStatus, MessageStatus, ReleaseState, SubscriptionStatus, WaveState,
};
use tokio_postgres::types::{FromSqlOwned, ToSql};

use crate::helpers::*;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// The names a CHECK constraint (`column IN ('a', 'b', ...)`) admits.
async fn admitted(db: &tokio_postgres::Client, constraint: &str) -> BTreeSet<String> {
    let def: String = db
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1 AND contype = 'c'",
            &[&constraint],
        )
        .await
        .unwrap_or_else(|e| panic!("no CHECK constraint {constraint}: {e}"))
        .get(0);
    // `CHECK ((status = ANY (ARRAY['planned'::text, ...])))`: the quoted pieces are the names.
    let names: BTreeSet<String> = def
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "{constraint}: {def}");
    names
}

async fn check<T>(
    db: &tokio_postgres::Client,
    constraint: &str,
    all: &[T],
    as_str: fn(T) -> &'static str,
) where
    T: Copy + PartialEq + std::fmt::Debug + ToSql + Sync + FromSqlOwned,
{
    let ours: BTreeSet<String> = all.iter().map(|&v| as_str(v).to_string()).collect();
    assert_eq!(admitted(db, constraint).await, ours, "{constraint}");
    for &v in all {
        let back: T = db.query_one("SELECT $1::text", &[&v]).await.unwrap().get(0);
        assert_eq!(back, v);
    }
}

#[tokio::test]
async fn the_schema_admits_exactly_the_states_of_the_enums() {
    let db = connect(&fresh_database().await).await;
    check(
        &db,
        "messages_status_check",
        MessageStatus::VARIANTS,
        MessageStatus::as_str,
    )
    .await;
    check(
        &db,
        "releases_state_check",
        ReleaseState::VARIANTS,
        ReleaseState::as_str,
    )
    .await;
    check(
        &db,
        "release_waves_state_check",
        WaveState::VARIANTS,
        WaveState::as_str,
    )
    .await;
    check(
        &db,
        "subscriptions_status_check",
        SubscriptionStatus::VARIANTS,
        SubscriptionStatus::as_str,
    )
    .await;
    check(
        &db,
        "confirmation_texts_status_check",
        ConfirmationStatus::VARIANTS,
        ConfirmationStatus::as_str,
    )
    .await;
    // A name the enums do not know is an error, not a panic or a default.
    let row = db.query_one("SELECT 'queued'::text", &[]).await.unwrap();
    assert!(row.try_get::<_, MessageStatus>(0).is_err());
}
