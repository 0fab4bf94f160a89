//! The development provider: one durable JSON line per text, readable back.

use std::sync::Arc;

use chrono::Utc;
use restock_sms::log::LogLine;
use restock_sms::{LogProvider, MessageStatus, OutboundSms, Provider, Sender};

fn sms(i: usize) -> OutboundSms {
    OutboundSms {
        reference: format!("msg-{i}"),
        to: format!("+4479460{i:05}"),
        from: Sender::MessagingService("MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
        body: format!("Back in stock {i}: Café crème “mug” https://ac.me/r/t{i}"),
        status_callback: None,
        validity: None,
        not_after: None,
        fallback_from: None,
        traceparent: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_text_is_one_valid_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sms/outbox.jsonl");
    let provider = Arc::new(LogProvider::open(&path).unwrap());

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let provider = provider.clone();
        tasks.spawn(async move { (i, provider.send(&sms(i)).await.unwrap()) });
    }
    let mut receipts = Vec::new();
    while let Some(done) = tasks.join_next().await {
        receipts.push(done.unwrap());
    }

    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 200);
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value.is_object());
    }
    let lines = LogProvider::read_lines(&path).unwrap();
    for (i, receipt) in receipts {
        assert_eq!(receipt.status, MessageStatus::Sent);
        assert!(receipt.provider_message_id.starts_with("LG"));
        assert_eq!(receipt.provider_message_id.len(), 34);
        let line = lines
            .iter()
            .find(|l| l.sid == receipt.provider_message_id)
            .unwrap();
        let expected = sms(i);
        assert_eq!(line.reference, expected.reference);
        assert_eq!((&line.to, &line.body), (&expected.to, &expected.body));
        assert_eq!(
            line.messaging_service_sid.as_deref(),
            Some("MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        );
        assert_eq!(line.encoding, "UCS-2");
        assert_eq!(Some(line.segments), receipt.segments);
    }
}

#[tokio::test]
async fn a_reopened_log_appends_and_written_texts_can_be_fetched_and_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let before = Utc::now();
    let first = LogProvider::open(&path)
        .unwrap()
        .send(&sms(1))
        .await
        .unwrap();

    let provider = LogProvider::open(&path).unwrap();
    let second = provider.send(&sms(2)).await.unwrap();

    let lines: Vec<LogLine> = LogProvider::read_lines(&path).unwrap();
    assert_eq!(lines.len(), 2);
    let fetched = provider
        .fetch(&first.provider_message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.provider_message_id, first.provider_message_id);
    let found = provider.lookup(&sms(2), before).await.unwrap().unwrap();
    assert_eq!(found.provider_message_id, second.provider_message_id);
    assert_eq!(provider.lookup(&sms(3), before).await.unwrap(), None);
    assert_eq!(provider.fetch("LG0").await.unwrap(), None);
}

#[tokio::test]
async fn a_torn_last_line_is_skipped_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let provider = LogProvider::open(&path).unwrap();
    provider.send(&sms(1)).await.unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"at\":\"20"))
        .unwrap();

    assert_eq!(LogProvider::read_lines(&path).unwrap().len(), 1);
}
