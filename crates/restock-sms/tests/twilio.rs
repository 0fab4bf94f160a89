//! The Twilio client against the loopback fake: every outcome the dispatch engine must tell
//! apart, and the reconciliation of the ones it cannot know.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use restock_sms::fake::FakeTwilio;
use restock_sms::twilio::TwilioConfig;
use restock_sms::{MessageStatus, OutboundSms, Provider, SendError, Sender, TwilioClient};

const PHONE: &str = "+14155550123";

fn sms(to: &str, body: &str) -> OutboundSms {
    OutboundSms {
        reference: "msg-1".into(),
        to: to.into(),
        from: Sender::Number("+14155559999".into()),
        body: body.into(),
        status_callback: Some("https://restock.example/webhooks/twilio/status?m=msg-1".into()),
        validity: Some(Duration::from_secs(3600)),
        not_after: None,
        fallback_from: None,
        traceparent: None,
    }
}

async fn setup() -> (FakeTwilio, TwilioClient) {
    let fake = FakeTwilio::start().await.unwrap();
    let client = TwilioClient::new(fake.config()).unwrap();
    (fake, client)
}

#[tokio::test]
async fn a_created_message_returns_its_sid_status_and_segments() {
    let (fake, client) = setup().await;
    let body = format!("Back in stock: {} Reply STOP to opt out", "x".repeat(150));

    let receipt = client.send(&sms(PHONE, &body)).await.unwrap();

    assert!(receipt.provider_message_id.starts_with("SM"));
    assert_eq!(receipt.provider_message_id.len(), 34);
    assert_eq!(receipt.status, MessageStatus::Queued);
    assert_eq!(receipt.segments, Some(2));
    let got = fake.messages();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.sid, receipt.provider_message_id);
    assert_eq!((m.to.as_str(), m.body.as_str()), (PHONE, body.as_str()));
    assert_eq!(m.from.as_deref(), Some("+14155559999"));
    assert_eq!(m.messaging_service_sid, None);
    assert_eq!(
        m.status_callback.as_deref(),
        Some("https://restock.example/webhooks/twilio/status?m=msg-1")
    );
    assert_eq!(m.validity_period, Some(3600));
    assert_eq!(m.traceparent, None);
}

#[tokio::test]
async fn the_trace_context_goes_as_the_traceparent_header() {
    let (fake, client) = setup().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut text = sms(PHONE, "Back in stock");
    text.traceparent = Some(traceparent.into());
    client.send(&text).await.unwrap();
    assert_eq!(fake.messages()[0].traceparent.as_deref(), Some(traceparent));
}

#[tokio::test]
async fn a_messaging_service_sender_goes_as_messaging_service_sid() {
    let (fake, client) = setup().await;
    let mut text = sms(PHONE, "Hi 😀");
    text.from = Sender::MessagingService("MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into());
    text.status_callback = None;
    text.validity = None;

    client.send(&text).await.unwrap();

    let m = &fake.messages()[0];
    assert_eq!(m.from, None);
    assert_eq!(
        m.messaging_service_sid.as_deref(),
        Some("MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    );
    assert_eq!(
        (m.status_callback.as_deref(), m.validity_period),
        (None, None)
    );
}

#[tokio::test]
async fn a_429_is_transient_with_the_retry_after_and_creates_nothing() {
    let (fake, client) = setup().await;
    fake.throttle_next(1, Duration::from_secs(7));

    let err = client.send(&sms(PHONE, "hello")).await.unwrap_err();

    assert!(
        matches!(err, SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
        "{err:?}"
    );
    assert_eq!(fake.message_count(), 0);
    // The throttle was for one request only.
    client.send(&sms(PHONE, "hello")).await.unwrap();
    assert_eq!(fake.message_count(), 1);
}

#[tokio::test]
async fn a_text_whose_deadline_passed_is_late_and_the_provider_gets_nothing() {
    let (fake, client) = setup().await;
    let mut text = sms(
        PHONE,
        "Back: Café crème https://ac.me/r/tok9 Reply STOP to opt out",
    );
    text.not_after = Some(Instant::now());

    let err = client.send(&text).await.unwrap_err();

    assert!(matches!(err, SendError::Late), "{err:?}");
    assert_eq!(fake.message_count(), 0);
    // The refused request never reached the provider whole: it created nothing, and the
    // client goes on sending on a fresh connection.
    text.not_after = Some(Instant::now() + Duration::from_secs(60));
    let receipt = client.send(&text).await.unwrap();
    let got = fake.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sid, receipt.provider_message_id);
    assert_eq!(got[0].body, text.body);
    assert_eq!(got[0].validity_period, Some(3600));
}

#[tokio::test]
async fn sends_with_a_deadline_each_create_one_message_side_by_side() {
    let (fake, client) = setup().await;
    let client = Arc::new(client);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut text = sms(&format!("+1415555{i:04}"), &format!("text {i}"));
            text.not_after = Some(Instant::now() + Duration::from_secs(60));
            client.send(&text).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(fake.message_count(), 40);
    assert_eq!(fake.create_requests(), 40);
}

#[tokio::test]
async fn a_500_is_unknown_and_when_lookup_finds_nothing_a_resend_sends_once() {
    let (fake, client) = setup().await;
    fake.fail_next(1);
    let text = sms(PHONE, "Your size is back: https://ac.me/r/tok1");
    let attempted = Utc::now();

    let err = client.send(&text).await.unwrap_err();
    assert!(matches!(err, SendError::Unknown { .. }), "{err:?}");

    assert_eq!(client.lookup(&text, attempted).await.unwrap(), None);
    client.send(&text).await.unwrap();
    assert_eq!(fake.message_count(), 1);
    assert_eq!(fake.create_requests(), 2);
}

#[tokio::test]
async fn a_500_after_the_message_was_created_is_reconciled_without_a_resend() {
    let (fake, client) = setup().await;
    fake.fail_after_create_next(1);
    let text = sms(PHONE, "Your size is back: https://ac.me/r/tok2");
    let attempted = Utc::now();

    let err = client.send(&text).await.unwrap_err();
    assert!(matches!(err, SendError::Unknown { .. }), "{err:?}");

    let found = client
        .lookup(&text, attempted)
        .await
        .unwrap()
        .expect("created");
    assert_eq!(found.provider_message_id, fake.messages()[0].sid);
    assert_eq!(found.status, MessageStatus::Queued);
}

#[tokio::test]
async fn a_stall_past_the_timeout_is_unknown_then_lookup_and_fetch_reconcile_it() {
    let fake = FakeTwilio::start().await.unwrap();
    let client = TwilioClient::new(TwilioConfig {
        timeout: Duration::from_millis(300),
        ..fake.config()
    })
    .unwrap();
    fake.stall_next(1, Duration::from_secs(3));
    let text = sms(PHONE, "Back: https://ac.me/r/tok3");
    let attempted = Utc::now();

    let started = Instant::now();
    let err = client.send(&text).await.unwrap_err();
    assert!(matches!(err, SendError::Unknown { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The message exists at the provider although the client never learnt its sid.
    let found = client
        .lookup(&text, attempted)
        .await
        .unwrap()
        .expect("created");
    let sid = found.provider_message_id;
    assert_eq!(fake.messages()[0].sid, sid);
    // From the sid on, fetch follows it.
    assert!(fake.set_status(&sid, "delivered", None));
    let report = client.fetch(&sid).await.unwrap().expect("known sid");
    assert_eq!(report.status, MessageStatus::Delivered);
    assert_eq!(report.segments, Some(1));
    assert!(report.created_at.is_some());
}

#[tokio::test]
async fn fetch_reports_a_carrier_failure_with_its_code() {
    let (fake, client) = setup().await;
    let sid = client
        .send(&sms(PHONE, "hi"))
        .await
        .unwrap()
        .provider_message_id;
    fake.set_status(&sid, "undelivered", Some(30007));

    let report = client.fetch(&sid).await.unwrap().unwrap();

    assert_eq!(report.status, MessageStatus::Undelivered);
    assert!(report.status.is_final());
    assert_eq!(report.error_code, Some(30007));
}

#[tokio::test]
async fn fetch_of_an_unknown_sid_is_none() {
    let (_fake, client) = setup().await;
    let unknown = "SM00000000000000000000000000000000";
    assert_eq!(client.fetch(unknown).await.unwrap(), None);
    assert_eq!(client.fetch("../../Calls").await.unwrap(), None);
}

#[tokio::test]
async fn lookup_does_not_match_another_body_or_an_older_text() {
    let (_fake, client) = setup().await;
    let text = sms(PHONE, "Back: https://ac.me/r/tok4");
    client.send(&text).await.unwrap();

    let other = sms(PHONE, "Back: https://ac.me/r/tok5");
    assert_eq!(client.lookup(&other, Utc::now()).await.unwrap(), None);
    let much_later = Utc::now() + chrono::Duration::minutes(10);
    assert_eq!(client.lookup(&text, much_later).await.unwrap(), None);
}

#[tokio::test]
async fn an_invalid_number_is_permanent_and_the_error_does_not_show_it() {
    let (fake, client) = setup().await;
    fake.reject_number(PHONE, 21211);

    let err = client.send(&sms(PHONE, "hi")).await.unwrap_err();

    assert!(
        matches!(
            err,
            SendError::Permanent {
                code: Some(21211),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("4155550123"), "{err}");
    assert_eq!(fake.message_count(), 0);
}

#[tokio::test]
async fn a_number_twilio_cannot_parse_is_permanent() {
    let (_fake, client) = setup().await;
    let err = client.send(&sms("4155550123", "hi")).await.unwrap_err();
    assert_eq!(err.code(), Some(21211));
    assert!(matches!(err, SendError::Permanent { .. }));
}

#[tokio::test]
async fn an_unsubscribed_recipient_is_opted_out() {
    let (fake, client) = setup().await;
    fake.reject_number(PHONE, 21610);

    let err = client.send(&sms(PHONE, "hi")).await.unwrap_err();

    assert_eq!(err, SendError::OptedOut { code: 21610 });
}

#[tokio::test]
async fn wrong_credentials_are_a_configuration_error_for_every_call() {
    let fake = FakeTwilio::start().await.unwrap();
    let client = TwilioClient::new(TwilioConfig {
        auth_token: "wrong".into(),
        ..fake.config()
    })
    .unwrap();
    let text = sms(PHONE, "hi");

    let send = client.send(&text).await.unwrap_err();
    let fetch = client
        .fetch("SM00000000000000000000000000000000")
        .await
        .unwrap_err();
    let lookup = client.lookup(&text, Utc::now()).await.unwrap_err();

    for err in [send, fetch, lookup] {
        assert!(
            matches!(
                err,
                SendError::Config {
                    code: Some(20003),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("wrong"));
    }
    assert_eq!(fake.create_requests(), 0);
}

#[tokio::test]
async fn a_wrong_account_sid_is_a_configuration_error() {
    let fake = FakeTwilio::start().await.unwrap();
    let client = TwilioClient::new(TwilioConfig {
        account_sid: "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
        ..fake.config()
    })
    .unwrap();
    let err = client.send(&sms(PHONE, "hi")).await.unwrap_err();
    assert!(matches!(err, SendError::Config { .. }), "{err:?}");
}

#[tokio::test]
async fn a_provider_that_refuses_connections_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = TwilioConfig::new(restock_sms::fake::ACCOUNT_SID, "token");
    config.base_url = format!("http://{addr}");
    let client = TwilioClient::new(config).unwrap();

    let err = client.send(&sms(PHONE, "hi")).await.unwrap_err();

    assert!(
        matches!(
            err,
            SendError::Transient {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_malformed_configuration_is_refused_up_front() {
    let mut config = TwilioConfig::new("AC/../x", "token");
    assert!(matches!(
        TwilioClient::new(config.clone()),
        Err(SendError::Config { .. })
    ));
    config.account_sid = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into();
    config.base_url = "ftp://example.com".into();
    assert!(matches!(
        TwilioClient::new(config),
        Err(SendError::Config { .. })
    ));
}

#[tokio::test]
async fn the_debug_of_a_text_shows_neither_phone_nor_body() {
    let text = sms(PHONE, "secret link https://ac.me/r/tok6");
    let shown = format!("{text:?}");
    assert!(
        !shown.contains("4155550123") && !shown.contains("tok6"),
        "{shown}"
    );
    assert!(shown.contains("***23"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_each_create_one_message() {
    let (fake, client) = setup().await;
    let client: Arc<dyn Provider> = Arc::new(client);
    let n = 2_000;
    let permits = Arc::new(tokio::sync::Semaphore::new(64));

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let to = format!("+1415555{i:04}");
            client.send(&sms(&to, &format!("text {i}"))).await
        });
    }
    let mut sids = std::collections::HashSet::new();
    while let Some(result) = tasks.join_next().await {
        sids.insert(result.unwrap().unwrap().provider_message_id);
    }
    let elapsed = started.elapsed();

    assert_eq!(sids.len(), n);
    assert!(fake.wait_for_messages(n, Duration::from_secs(1)).await);
    eprintln!(
        "{n} sends through the fake in {elapsed:?}: {:.0}/s",
        n as f64 / elapsed.as_secs_f64()
    );
}
