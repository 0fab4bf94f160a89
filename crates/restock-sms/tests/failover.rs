//! The fallback sender against two loopback Twilio accounts: it takes over when the first
//! cannot take texts at all, never when a text's outcome is unknown or the text itself is the
//! problem, and the first account rests for its cool-down in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use restock_sms::fake::FakeTwilio;
use restock_sms::twilio::{codes, TwilioConfig};
use restock_sms::{Failover, OutboundSms, Provider, SendError, Sender, TwilioClient};

const PHONE: &str = "+14155550123";
const FALLBACK_FROM: &str = "MG0123456789abcdef0123456789abcdef";

fn text(body: &str) -> OutboundSms {
    OutboundSms {
        reference: "msg-1".into(),
        to: PHONE.into(),
        from: Sender::Number("+14155559999".into()),
        body: body.into(),
        status_callback: None,
        validity: None,
        not_after: Some(Instant::now() + Duration::from_secs(60)),
        fallback_from: Some(Sender::MessagingService(FALLBACK_FROM.into())),
        traceparent: None,
    }
}

fn client(config: TwilioConfig) -> Arc<dyn Provider> {
    Arc::new(TwilioClient::new(config).unwrap())
}

async fn pair(cool_down: Duration) -> (FakeTwilio, FakeTwilio, Failover) {
    let first = FakeTwilio::start().await.unwrap();
    let second = FakeTwilio::start().await.unwrap();
    let failover = Failover::new(
        client(first.config()),
        Some(client(second.config())),
        cool_down,
    );
    (first, second, failover)
}

#[tokio::test]
async fn a_sender_the_first_account_refuses_goes_through_the_fallback_which_then_leads() {
    let (first, second, failover) = pair(Duration::from_millis(300)).await;
    // The first account's sender cannot text (Twilio 21606): a configuration error.
    first.reject_number(PHONE, codes::FROM_NOT_CAPABLE);

    let receipt = failover.send(&text("one")).await.unwrap();

    assert_eq!(first.create_requests(), 1);
    assert_eq!(first.message_count(), 0);
    let got = second.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sid, receipt.provider_message_id);
    assert_eq!(got[0].messaging_service_sid.as_deref(), Some(FALLBACK_FROM));
    assert_eq!(got[0].from, None);
    // Resting: the next text does not try the first account first.
    assert!(failover.primary_resting());
    failover.send(&text("two")).await.unwrap();
    assert_eq!(first.create_requests(), 1);
    assert_eq!(second.message_count(), 2);
    // Past the cool-down the first account is tried again (and still refuses).
    tokio::time::sleep(Duration::from_millis(400)).await;
    failover.send(&text("three")).await.unwrap();
    assert_eq!(first.create_requests(), 2);
    assert_eq!(second.message_count(), 3);
    // Both places are asked when a text is looked for or fetched.
    let found = failover
        .lookup(&text("two"), Utc::now() - chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert!(found.is_some());
    assert!(failover
        .fetch(&receipt.provider_message_id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        failover
            .lookup(
                &text("never sent"),
                Utc::now() - chrono::Duration::minutes(1)
            )
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn an_unreachable_first_account_is_an_outage_the_fallback_covers() {
    let second = FakeTwilio::start().await.unwrap();
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = second.config();
    config.base_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let failover = Failover::new(
        client(config),
        Some(client(second.config())),
        Duration::from_secs(30),
    );

    failover.send(&text("hello")).await.unwrap();

    assert_eq!(second.message_count(), 1);
}

#[tokio::test]
async fn an_unknown_outcome_a_throttle_or_a_bad_number_never_goes_to_the_fallback() {
    let (first, second, failover) = pair(Duration::from_secs(30)).await;
    // A 500: the first account may have created the text. Sending it again elsewhere could
    // text the phone twice.
    first.fail_next(1);
    let err = failover.send(&text("a")).await.unwrap_err();
    assert!(matches!(err, SendError::Unknown { .. }), "{err:?}");
    // A 429: only this request was turned away; backoff and caps handle it.
    first.throttle_next(1, Duration::from_secs(2));
    let err = failover.send(&text("b")).await.unwrap_err();
    assert!(
        matches!(err, SendError::Transient { outage: false, .. }),
        "{err:?}"
    );
    // An invalid number is invalid from any sender.
    first.reject_number("+14155550000", codes::INVALID_TO);
    let mut bad = text("c");
    bad.to = "+14155550000".into();
    let err = failover.send(&bad).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");

    assert_eq!(second.create_requests(), 0);
    assert!(!failover.primary_resting());
}

#[tokio::test]
async fn a_text_without_a_fallback_gets_the_first_accounts_answer() {
    let first = FakeTwilio::start().await.unwrap();
    let failover = Failover::new(client(first.config()), None, Duration::from_secs(30));
    first.reject_number(PHONE, codes::FROM_NOT_CAPABLE);
    let mut plain = text("x");
    plain.fallback_from = None;

    let err = failover.send(&plain).await.unwrap_err();

    assert!(matches!(err, SendError::Config { .. }), "{err:?}");
    assert!(!failover.primary_resting());
}
