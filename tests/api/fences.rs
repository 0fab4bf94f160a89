//! Promises that must hold under faults, tried the way an adversary would: opt-outs racing a
//! paced release on two replicas, and a replica frozen past its lease while another takes over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;

use crate::helpers::*;
use crate::replicas::{message_statuses, outbox, restock_through, subscribe_through, Server};

/// The demo tenants' sender: a STOP to it opts the phone out of both.
const SENDER: &str = "+15005550006";

/// How a phone is taken off the list in [`opt_outs_racing_a_paced_release_on_two_replicas_are_never_texted_after_they_answer`].
#[derive(Debug, Clone, Copy)]
enum Way {
    OptOutRpc,
    StopReply,
    Erasure,
}

/// Opts `phone` out through `server` in `way`; returns once the answer is in.
async fn take_off(server: &Server, fake: &FakeTwilio, phone: &str, way: Way, k: usize) {
    match way {
        Way::OptOutRpc => {
            restock::proto::v1::waitlist_service_client::WaitlistServiceClient::new(
                server.channel.clone(),
            )
            .opt_out(pb::OptOutRequest {
                tenant_id: "demo".into(),
                phone_number: phone.into(),
                source: pb::ConsentSource::Support as i32,
                ..Default::default()
            })
            .await
            .expect("opt out");
        }
        Way::Erasure => {
            restock::proto::v1::waitlist_service_client::WaitlistServiceClient::new(
                server.channel.clone(),
            )
            .erase_phone(pb::ErasePhoneRequest {
                tenant_id: "demo".into(),
                phone_number: phone.into(),
                ..Default::default()
            })
            .await
            .expect("erase");
        }
        Way::StopReply => {
            let path = "/webhooks/twilio/inbound";
            let sid = format!("SMstop{k:028}");
            let params = owned(&[
                ("MessageSid", sid.as_str()),
                ("AccountSid", fake.config().account_sid.as_str()),
                ("From", phone),
                ("To", SENDER),
                ("Body", "STOP"),
                ("NumSegments", "1"),
                ("NumMedia", "0"),
            ]);
            let answer = post_signed(
                &http_client(),
                server.http.parse().unwrap(),
                path,
                &params,
                &fake.config().auth_token,
            )
            .await;
            assert_eq!(answer.status, 200, "{answer:?}");
        }
    }
}

/// Before the fence, about half of the phones that opted out mid-release were texted anyway,
/// up to 14 s after the opt-out answered: the sender decided consent once per claimed batch and
/// then paced its hand-overs. Now no text reaches the provider after the answer.
#[tokio::test]
async fn opt_outs_racing_a_paced_release_on_two_replicas_are_never_texted_after_they_answer() {
    let fake = FakeTwilio::start().await.unwrap();
    let db_url = fresh_database().await;
    let prefix = format!("t:{}", uuid::Uuid::new_v4().simple());
    // Paced: a whole batch is claimed at once and handed over a few texts at a time.
    let paced = [("RESTOCK__TENANTS__DEMO__SENDER_MPS", "20")];
    let servers = [
        Server::start(&db_url, &prefix, &fake, &paced).await,
        Server::start(&db_url, &prefix, &fake, &paced).await,
    ];
    let phones = phones(240, 0);
    subscribe_through(&servers[0].channel, "sku-1", &phones).await;
    restock_through(&servers[0].channel, "sku-1", 0, 1).await;
    restock_through(&servers[1].channel, "sku-1", 40, 2).await;
    assert!(fake.wait_for_messages(20, Duration::from_secs(30)).await);

    // 80 phones further down the line taken off while the release goes on, each on a replica
    // and in a way of its own; the moment each answer arrived is kept.
    let targets: Vec<String> = phones[40..200].iter().step_by(2).cloned().collect();
    let ways = [Way::OptOutRpc, Way::StopReply, Way::Erasure];
    let mut answered: HashMap<String, Instant> = HashMap::new();
    for (k, phone) in targets.iter().enumerate() {
        take_off(&servers[k % 2], &fake, phone, ways[k % 3], k).await;
        answered.insert(phone.clone(), Instant::now());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    // The release runs to its end: everyone else is texted once.
    let rest = phones.len() - targets.len();
    eventually(Duration::from_secs(60), "the release finished", || async {
        let s = message_statuses(&db_url).await;
        !s.contains_key("planned") && !s.contains_key("sending") && !s.contains_key("deferred")
    })
    .await;
    let sent = per_phone(&fake);
    let doubled: Vec<_> = sent.iter().filter(|(_, &n)| n > 1).collect();
    assert!(doubled.is_empty(), "texted twice: {doubled:?}");
    for p in phones.iter().filter(|p| !answered.contains_key(*p)) {
        assert_eq!(sent.get(p), Some(&1), "{p} was not texted");
    }
    let mut late = Vec::new();
    let mut before = 0;
    for m in fake.messages() {
        if let Some(at) = answered.get(&m.to) {
            if m.received_at > *at {
                late.push((m.to.clone(), m.received_at - *at));
            } else {
                before += 1;
            }
        }
    }
    assert!(
        late.is_empty(),
        "{} of {} phones texted after their opt-out answered: {late:?}",
        late.len(),
        targets.len()
    );
    // The race was real: the release was still going when the opt-outs ran.
    assert!(
        before < targets.len() && sent.len() >= rest,
        "texted before their opt-out: {before}"
    );
    eprintln!(
        "{before} of {} phones were texted before their opt-out answered, none after",
        targets.len()
    );
}

/// Before the check on the sender's own clock, 187-200 of 1,000 phones got two texts: a
/// replica frozen with granted texts in hand woke up after another had reconciled them, and
/// sent them again.
#[tokio::test]
async fn a_replica_frozen_past_its_lease_never_sends_what_another_took_over() {
    let fake = FakeTwilio::start().await.unwrap();
    let db_url = fresh_database().await;
    let prefix = format!("t:{}", uuid::Uuid::new_v4().simple());
    let settings = [
        ("RESTOCK__DISPATCH__LEASE_SECONDS", "3"),
        ("RESTOCK__DISPATCH__BATCH_SIZE", "100"),
        ("RESTOCK__DISPATCH__CONCURRENCY", "16"),
    ];
    let frozen = Server::start(&db_url, &prefix, &fake, &settings).await;
    let other = Server::start(&db_url, &prefix, &fake, &settings).await;
    let phones = phones(1000, 0);
    subscribe_through(&frozen.channel, "sku-1", &phones).await;
    // A slow provider: texts pile up granted but not yet handed over.
    fake.stall_next(100_000, Duration::from_millis(100));
    restock_through(&frozen.channel, "sku-1", 0, 1).await;
    restock_through(&frozen.channel, "sku-1", 40, 2).await;
    assert!(fake.wait_for_messages(100, Duration::from_secs(30)).await);
    frozen.signal("STOP");
    let at_freeze = fake.message_count();
    // Past two leases: the other replica reconciles what the frozen one held and sends it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = fake.message_count();
    frozen.signal("CONT");
    assert!(
        fake.wait_for_messages(1000, Duration::from_secs(90)).await,
        "only {} texts arrived; messages: {:?}",
        fake.message_count(),
        outbox(&db_url).await
    );
    eventually(Duration::from_secs(30), "every message sent", || async {
        message_statuses(&db_url).await.get("sent") == Some(&1000)
    })
    .await;
    // A moment more for a late duplicate to land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = per_phone(&fake);
    let doubled: Vec<_> = sent.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} phones texted twice: {doubled:?}",
        doubled.len()
    );
    assert_eq!(sent.len(), 1000);
    assert_eq!(fake.message_count(), 1000);
    assert!(
        during > at_freeze,
        "the other replica did not go on while one was frozen"
    );
    drop(other);
}

/// The last check before a hand-over is one statement over the whole batch: each text is
/// answered for itself (a phone opted out, a phone erased, a lease another owner holds), only
/// the texts that may go are marked handed, and a text that vanished is nobody's to send.
#[tokio::test]
async fn the_last_check_answers_each_text_of_a_batch_and_marks_only_those_that_go() {
    let fake = FakeTwilio::start().await.expect("fake");
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let phones = phones(4, 7100);
    subscribe_all(&app, "last-check", &phones).await;
    set_stock(&app, "last-check", "web", 10, 1).await;
    let engine = app.engine.clone().expect("engine");
    restock::workers::scheduler::run_once(&engine)
        .await
        .expect("plan");
    let store = &app.state.store;
    let owner = "replica-a";
    let claimed = store
        .claim_due(owner, Duration::from_secs(30), 10, app.clock.now_dt())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4, "every planned text claimed");
    let id_of = |phone: &str| {
        claimed
            .iter()
            .find(|c| c.candidate.phone_e164.as_deref() == Some(phone))
            .map(|c| c.message_id)
            .expect("claimed")
    };
    let (go, opted_out, erased, taken) = (
        id_of(&phones[0]),
        id_of(&phones[1]),
        id_of(&phones[2]),
        id_of(&phones[3]),
    );
    app.opt_out(pb::OptOutRequest {
        tenant_id: "demo".into(),
        phone_number: phones[1].clone(),
        source: pb::ConsentSource::Support as i32,
        ..Default::default()
    })
    .await
    .expect("opt out");
    app.erase_phone(pb::ErasePhoneRequest {
        tenant_id: "demo".into(),
        phone_number: phones[2].clone(),
        ..Default::default()
    })
    .await
    .expect("erase");
    let db = app.db().await;
    db.execute(
        "UPDATE messages SET lease_owner = 'replica-b' WHERE message_id = $1",
        &[&taken],
    )
    .await
    .expect("take over");

    let vanished = uuid::Uuid::now_v7();
    let mut batch: Vec<(String, uuid::Uuid)> = [go, opted_out, erased, taken, vanished]
        .into_iter()
        .map(|id| ("demo".to_string(), id))
        .collect();
    batch.reverse();
    let verdicts: HashMap<uuid::Uuid, restock_store::handover::Handover> = store
        .mark_handed(owner, &batch, app.clock.now_dt(), Duration::from_secs(5))
        .await
        .expect("last check")
        .into_iter()
        .collect();
    use restock_store::handover::Handover;
    assert_eq!(verdicts.len(), 5, "{verdicts:?}");
    assert_eq!(verdicts[&go], Handover::Go);
    assert_eq!(verdicts[&opted_out], Handover::OptedOut);
    assert_eq!(verdicts[&erased], Handover::Erased);
    assert_eq!(verdicts[&taken], Handover::LeaseLost);
    assert_eq!(verdicts[&vanished], Handover::LeaseLost);
    let handed: Vec<uuid::Uuid> = db
        .query(
            "SELECT message_id FROM messages WHERE handed_at IS NOT NULL",
            &[],
        )
        .await
        .expect("handed")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(handed, vec![go], "only the text that goes is marked handed");

    // A lease about to run out (within the margin) is as good as lost.
    let late = store
        .mark_handed(
            owner,
            &[("demo".to_string(), go)],
            app.clock.now_dt() + chrono::Duration::seconds(28),
            Duration::from_secs(5),
        )
        .await
        .expect("late check");
    assert_eq!(late, vec![(go, Handover::LeaseLost)]);
}
